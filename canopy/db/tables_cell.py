"""Tables that belong to one cell (data center): hosts, services, instances with their actions and
faults, the durable task rows, and the ports and IP allocations of the cell's segments."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

from canopy.db.tables_global import NAMING
from canopy.db.types import JSONType, UTCDateTime

metadata = MetaData(naming_convention=NAMING)
# JSON whose Python None is SQL NULL (not the JSON text `null`), so "IS NULL" means "nothing to say".
HealthJSON = JSON(none_as_null=True).with_variant(mysql.JSON(none_as_null=True), "mysql", "mariadb")

hosts = Table(
    "hosts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("hypervisor_type", String(32), nullable=False, default="fake"),
    Column("hypervisor_version", Integer, nullable=False, default=1000),
    Column("host_ip", String(64), nullable=True),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("local_gb", Integer, nullable=False),
    Column("vcpus_used", Integer, nullable=False, default=0),
    Column("memory_mb_used", Integer, nullable=False, default=0),
    Column("local_gb_used", Integer, nullable=False, default=0),
    Column("running_vms", Integer, nullable=False, default=0),
    Column("cpu_allocation_ratio", Float, nullable=False, default=4.0),
    Column("ram_allocation_ratio", Float, nullable=False, default=1.0),
    Column("disk_allocation_ratio", Float, nullable=False, default=1.0),
    Column("reserved_vcpus", Integer, nullable=False, default=0),
    Column("reserved_memory_mb", Integer, nullable=False, default=512),
    Column("reserved_disk_gb", Integer, nullable=False, default=0),
    Column("availability_zone", String(255), nullable=False, default="nova"),
    Column("datacenter", String(64), nullable=False, default="dc1"),
    Column("rack", String(64), nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("disabled_reason", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Enrollment (issue 19): "pending" from the enrollment until the agent's health checks first pass,
    # then "complete"; NULL for a host that registered without enrolling. Only "pending" is unschedulable.
    Column("enrollment", String(16), nullable=True),
    Index("ix_hosts_updated_at", "updated_at"),
    Index("ix_hosts_enrollment", "enrollment"),
)

services = Table(
    "services",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("binary", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("version", String(32), nullable=False, default=""),
    Column("last_seen_at", UTCDateTime, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("disabled_reason", String(255), nullable=True),
    Column("forced_down", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # An agent's failing health checks from its last heartbeat ({name: detail}); NULL when none fail
    # (or the service reports no health). Written with the batched heartbeats (migration 0900health01).
    Column("health", HealthJSON, nullable=True),
    UniqueConstraint("binary", "host", name="uq_services_binary_host"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("project_id", String(32), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("hostname", String(255), nullable=False, default=""),
    Column("description", Text, nullable=True),
    Column("flavor_id", String(255), nullable=False),
    Column("flavor", JSONType, nullable=False),
    Column("image_ref", String(36), nullable=False, default=""),
    Column("host", String(255), nullable=True),
    Column("availability_zone", String(255), nullable=True),
    Column("vm_state", String(32), nullable=False),
    Column("task_state", String(32), nullable=True),
    Column("power_state", Integer, nullable=False, default=0),
    Column("key_name", String(255), nullable=True),
    Column("key_data", Text, nullable=True),
    Column("user_data", Text, nullable=True),
    Column("config_drive", String(16), nullable=False, default=""),
    Column("metadata", JSONType, nullable=False, default=dict),
    Column("networks", JSONType, nullable=False, default=list),
    Column("addresses", JSONType, nullable=False, default=dict),
    Column("reservation_id", String(32), nullable=False, default=""),
    Column("launch_index", Integer, nullable=False, default=0),
    Column("locked", Boolean, nullable=False, default=False),
    Column("locked_by", String(16), nullable=True),  # "owner" or "admin", as Nova
    Column("locked_reason", String(255), nullable=True),
    Column("access_ip_v4", String(39), nullable=True),
    Column("access_ip_v6", String(39), nullable=True),
    Column("tags", JSONType, nullable=True),
    Column("server_password", Text, nullable=True),  # what the guest posted (os-server-password)
    Column("shelved_image_id", String(36), nullable=True),
    Column("shelved_at", UTCDateTime, nullable=True),
    Column("progress", Integer, nullable=False, default=0),
    Column("launched_at", UTCDateTime, nullable=True),
    Column("terminated_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, nullable=True),
    Column("deleted", Boolean, nullable=False, default=False),
    Index("ix_instances_project_deleted", "project_id", "deleted", "id"),
    Index("ix_instances_updated_at", "updated_at"),
    Index("ix_instances_host", "host"),
    Index("ix_instances_vm_state", "vm_state"),
)

instance_faults = Table(
    "instance_faults",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_uuid", String(36), nullable=False),
    Column("code", Integer, nullable=False),
    Column("message", Text, nullable=False),
    Column("details", Text, nullable=False, default=""),
    Column("host", String(255), nullable=True),
    Column("task_state", String(32), nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_instance_faults_instance", "instance_uuid", "id"),
)

instance_actions = Table(
    "instance_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_uuid", String(36), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("user_id", String(32), nullable=True),
    Column("project_id", String(32), nullable=True),
    Column("start_time", UTCDateTime, nullable=False),
    Column("finish_time", UTCDateTime, nullable=True),
    Column("message", String(255), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_instance_actions_instance", "instance_uuid", "request_id"),
)

instance_action_events = Table(
    "instance_action_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("action_id", Integer, ForeignKey("instance_actions.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(255), nullable=False),
    Column("start_time", UTCDateTime, nullable=False),
    Column("finish_time", UTCDateTime, nullable=True),
    Column("result", String(32), nullable=True),
    Column("traceback", Text, nullable=True),
    Column("host", String(255), nullable=True),
    Column("details", Text, nullable=True),
    Index("ix_instance_action_events_action", "action_id"),
)

# A durable task: written with the api's change, leased by one conductor; the bus only wakes conductors.
tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_uuid", String(36), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("action_id", Integer, nullable=True),
    Column("payload", JSONType, nullable=False, default=dict),
    Column("request_id", String(64), nullable=False),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_tasks_lease", "lease_expires_at"),
    Index("ix_tasks_instance", "instance_uuid"),
)

ports = Table(
    "ports",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("network_id", String(36), nullable=False),
    Column("project_id", String(32), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("mac_address", String(32), nullable=False, unique=True),
    Column("device_id", String(255), nullable=False, default=""),
    Column("device_owner", String(255), nullable=False, default=""),
    Column("host_id", String(255), nullable=False, default=""),
    Column("status", String(16), nullable=False, default="DOWN"),
    Column("admin_state_up", Boolean, nullable=False, default=True),
    Column("port_security_enabled", Boolean, nullable=False, default=True),
    Column("allowed_address_pairs", JSONType, nullable=False, default=list),
    # a port the user created and booted on: unbound, not deleted, when its server goes (as Nova)
    Column("preserve_on_delete", Boolean, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_ports_network", "network_id"),
    Index("ix_ports_device", "device_id"),
    Index("ix_ports_project", "project_id"),
)

# The primary key makes "never the same address twice" the database's job, across any number of processes.
ip_allocations = Table(
    "ip_allocations",
    metadata,
    Column("subnet_id", String(36), primary_key=True),
    Column("ip_address", String(64), primary_key=True),
    Column("port_id", String(36), ForeignKey("ports.id", ondelete="CASCADE"), nullable=False),
    Column("network_id", String(36), nullable=False),
    Index("ix_ip_allocations_port", "port_id"),
)


# -- scheduler: where each server group's members were placed (issue 3) ---------------------------

# Written in the claim's transaction, so a hard (anti-)affinity check and the claim are one atomic step.
# A row counts only while its instance still holds that host (not deleted, host unchanged).
group_placements = Table(
    "group_placements",
    metadata,
    Column("group_uuid", String(36), primary_key=True),
    Column("instance_uuid", String(36), primary_key=True),
    Column("host", String(255), nullable=False),
    Index("ix_group_placements_group_host", "group_uuid", "host"),
)

# The host a hard-affinity group is anchored to: the primary key makes the first member's host win.
group_anchors = Table(
    "group_anchors",
    metadata,
    Column("group_uuid", String(36), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


# -- network: port bindings, QoS, address holds (issue 4) -----------------------------------------

# A bound port's OpenFlow number on its host; the unique key makes two ports of a host never share one.
port_bindings = Table(
    "port_bindings",
    metadata,
    Column("port_id", String(36), ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("ofport", Integer, nullable=False),
    UniqueConstraint("host", "ofport", name="uq_port_bindings_host_ofport"),
)

port_qos = Table(
    "port_qos",
    metadata,
    Column("port_id", String(36), ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True),
    Column("policy_id", String(36), nullable=False),
    Index("ix_port_qos_policy", "policy_id"),
)

# A port's security groups (the groups themselves are global).
port_security_groups = Table(
    "port_security_groups",
    metadata,
    Column("port_id", String(36), ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True),
    Column("security_group_id", String(36), primary_key=True),
    Index("ix_port_security_groups_group", "security_group_id"),
)

# A public address freed recently: it goes to another project only once the hold time has passed.
ip_holds = Table(
    "ip_holds",
    metadata,
    Column("subnet_id", String(36), primary_key=True),
    Column("ip_address", String(64), primary_key=True),
    Column("project_id", String(32), nullable=False),
    Column("released_at", UTCDateTime, nullable=False),
    Index("ix_ip_holds_released", "released_at"),
)

# Named locks ("project:<id>", "host:<name>"): taking one serializes the port creations of a project under
# quota (count, then add, without a race) or the bindings of one host (its next OpenFlow number).
network_locks = Table(
    "network_locks",
    metadata,
    Column("name", String(255), primary_key=True),
)

# -- operability (issue 7) ---------------------------------------------------------------------------

# The stuck-task sweeper's query: servers in some task state, oldest update first (migration 0700ops01).
Index("ix_instances_task_state", instances.c.task_state, instances.c.updated_at)

# -- real hypervisors (issue 5) ----------------------------------------------------------------------

# What a host's agent reports about its hypervisor beyond the hosts row: the accelerator its guests run
# with (kvm or tcg) and the host CPU, shown by os-hypervisors (migration 0500virt01).
hypervisor_details = Table(
    "hypervisor_details",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("accelerator", String(16), nullable=False, default=""),
    Column("cpu_info", JSONType, nullable=False, default=dict),
    Column("updated_at", UTCDateTime, nullable=False),
)

# -- db at scale: an index for every filter and the default sort the API offers (issue 8) ----------
for _name, _table, _cols in (
    ("ix_instances_project_created", instances, ("project_id", "deleted", "created_at")),
    ("ix_instances_created_at", instances, ("created_at",)),
    ("ix_instances_image_ref", instances, ("image_ref",)),
    ("ix_instances_flavor_id", instances, ("flavor_id",)),
    ("ix_instances_reservation", instances, ("reservation_id",)),
    ("ix_instances_az", instances, ("availability_zone",)),
    ("ix_ports_device_owner", ports, ("device_owner",)),
    ("ix_ports_host_id", ports, ("host_id",)),
    ("ix_ports_name", ports, ("name",)),
    ("ix_ip_allocations_ip", ip_allocations, ("ip_address",)),
    ("ix_services_host", services, ("host",)),
):
    Index(_name, *(_table.c[col] for col in _cols))

# -- server mobility (issue 6) ------------------------------------------------------------------------

# One row per resize, cold or live migration and evacuation (migration 0600mob01): what os-migrations and
# /servers/{id}/migrations show, and what a revert or confirm needs (the old and new flavors, the hosts).
migrations = Table(
    "migrations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("instance_uuid", String(36), nullable=False),
    Column("migration_type", String(32), nullable=False),  # resize | migration | live-migration | evacuation
    Column("status", String(32), nullable=False),
    Column("source_compute", String(255), nullable=True),
    Column("dest_compute", String(255), nullable=True),
    Column("old_flavor", JSONType, nullable=False, default=dict),
    Column("new_flavor", JSONType, nullable=False, default=dict),
    Column("old_vm_state", String(32), nullable=False, default="active"),  # what a revert restores
    Column("project_id", String(32), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("memory_total", BigInteger, nullable=True),
    Column("memory_processed", BigInteger, nullable=True),
    Column("memory_remaining", BigInteger, nullable=True),
    Column("disk_total", BigInteger, nullable=True),
    Column("disk_processed", BigInteger, nullable=True),
    Column("disk_remaining", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_migrations_instance", "instance_uuid", "id"),
    Index("ix_migrations_status", "status", "updated_at"),
)
