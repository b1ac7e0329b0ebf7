"""Tables that span every cell (data center): identity, flavors, images, keypairs, quotas, networks,
and the maps from each instance and host to its cell."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from canopy.db.types import JSONType, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

cells = Table(
    "cells",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("database_url", Text, nullable=False),
    Column("transport_url", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("domain_id", String(64), nullable=False, default="default"),
    Column("description", Text, nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("domain_id", "name", name="uq_projects_domain_name"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("domain_id", String(64), nullable=False, default="default"),
    Column("password_hash", String(255), nullable=False),
    Column("default_project_id", String(32), nullable=True),
    Column("email", String(255), nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("domain_id", "name", name="uq_users_domain_name"),
)

roles = Table(
    "roles",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
)

role_assignments = Table(
    "role_assignments",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("project_id", String(32), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", String(32), ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)

flavors = Table(
    "flavors",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("vcpus", Integer, nullable=False),
    Column("ram_mb", Integer, nullable=False),
    Column("disk_gb", Integer, nullable=False),
    Column("ephemeral_gb", Integer, nullable=False, default=0),
    Column("swap_mb", Integer, nullable=False, default=0),
    Column("rxtx_factor", String(16), nullable=False, default="1.0"),
    Column("is_public", Boolean, nullable=False, default=True),
    Column("description", Text, nullable=True),
    Column("extra_specs", JSONType, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
)

images = Table(
    "images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=True),
    Column("owner", String(32), nullable=True),
    Column("visibility", String(16), nullable=False, default="shared"),
    Column("status", String(32), nullable=False),
    Column("container_format", String(32), nullable=True),
    Column("disk_format", String(32), nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("checksum", String(32), nullable=True),
    Column("os_hash_algo", String(32), nullable=True),
    Column("os_hash_value", String(128), nullable=True),
    Column("min_disk", Integer, nullable=False, default=0),
    Column("min_ram", Integer, nullable=False, default=0),
    Column("protected", Boolean, nullable=False, default=False),
    Column("tags", JSONType, nullable=False, default=list),
    Column("properties", JSONType, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_images_owner", "owner"),
)

keypairs = Table(
    "keypairs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("type", String(16), nullable=False, default="ssh"),
    Column("public_key", Text, nullable=False),
    Column("fingerprint", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("user_id", "name", name="uq_keypairs_user_name"),
)

# Limits and usage in one row, so a boot's quota check is one conditional UPDATE with no race.
quota_usage = Table(
    "quota_usage",
    metadata,
    Column("project_id", String(32), primary_key=True),
    Column("instances_limit", Integer, nullable=False),
    Column("cores_limit", Integer, nullable=False),
    Column("ram_limit", Integer, nullable=False),
    Column("instances_used", Integer, nullable=False, default=0),
    Column("cores_used", Integer, nullable=False, default=0),
    Column("ram_used", Integer, nullable=False, default=0),
)

instance_mappings = Table(
    "instance_mappings",
    metadata,
    Column("instance_uuid", String(36), primary_key=True),
    Column("cell_name", String(64), nullable=False),
    Column("project_id", String(32), nullable=False),
    Index("ix_instance_mappings_project", "project_id"),
)

host_mappings = Table(
    "host_mappings",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("cell_name", String(64), nullable=False),
)

networks = Table(
    "networks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False, default=""),
    Column("project_id", String(32), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False, default="ACTIVE"),
    Column("admin_state_up", Boolean, nullable=False, default=True),
    Column("shared", Boolean, nullable=False, default=False),
    Column("external", Boolean, nullable=False, default=False),
    Column("mtu", Integer, nullable=False, default=1500),
    Column("network_type", String(16), nullable=False, default="flat"),
    Column("physical_network", String(64), nullable=True),
    Column("segmentation_id", Integer, nullable=True),
    # Hosts answer ARP for the network's every address (and hold them all): see docs/network.md
    Column("arp_responder", Boolean, nullable=False, default=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_networks_project", "project_id"),
)

subnets = Table(
    "subnets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("network_id", String(36), ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("project_id", String(32), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("ip_version", Integer, nullable=False),
    Column("cidr", String(64), nullable=False),
    Column("gateway_ip", String(64), nullable=True),
    Column("enable_dhcp", Boolean, nullable=False, default=False),
    Column("allocation_pools", JSONType, nullable=False, default=list),
    Column("dns_nameservers", JSONType, nullable=False, default=list),
    Column("host_routes", JSONType, nullable=False, default=list),
    Column("segment_id", String(36), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_subnets_network", "network_id"),
)

# -- scheduler: host aggregates and server groups (issue 3) ----------------------------------------

# Soft-deleted so the scheduler's change feed sees a deletion; `deleted` is 0 while live and the row's
# id once deleted, so a name is unique among live aggregates only.
aggregates = Table(
    "aggregates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("availability_zone", String(255), nullable=True),
    Column("metadata", JSONType, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, nullable=True),
    Column("deleted", Integer, nullable=False, default=0),
    UniqueConstraint("name", "deleted", name="uq_aggregates_name_deleted"),
    Index("ix_aggregates_updated_at", "updated_at"),
)

aggregate_hosts = Table(
    "aggregate_hosts",
    metadata,
    Column("aggregate_id", Integer, ForeignKey("aggregates.id", ondelete="CASCADE"), primary_key=True),
    Column("host", String(255), primary_key=True),
    Index("ix_aggregate_hosts_host", "host"),
)

server_groups = Table(
    "server_groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("project_id", String(32), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("policy", String(32), nullable=False),
    Column("rules", JSONType, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_server_groups_project", "project_id"),
)

server_group_members = Table(
    "server_group_members",
    metadata,
    Column("group_id", Integer, ForeignKey("server_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("instance_uuid", String(36), primary_key=True),
    Index("ix_server_group_members_instance", "instance_uuid"),
)

# -- network: segments, QoS policies, network quotas (issue 4) --------------------------------------

# Routed provider networks: each rack's segment of a network has its own subnets (subnets.segment_id).
network_segments = Table(
    "network_segments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("network_id", String(36), ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("network_type", String(16), nullable=False),
    Column("physical_network", String(64), nullable=True),
    Column("segmentation_id", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_network_segments_network", "network_id"),
)

# Admin data: which segment of a network a rack's hosts reach. One segment per (network, rack).
segment_racks = Table(
    "segment_racks",
    metadata,
    Column("network_id", String(36), primary_key=True),
    Column("datacenter", String(64), primary_key=True),
    Column("rack", String(64), primary_key=True),
    Column("segment_id", String(36), ForeignKey("network_segments.id", ondelete="CASCADE"), nullable=False),
    Index("ix_segment_racks_segment", "segment_id"),
)

qos_policies = Table(
    "qos_policies",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("project_id", String(32), nullable=False),
    Column("shared", Boolean, nullable=False, default=False),
    Column("is_default", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_qos_policies_project", "project_id"),
)

qos_bandwidth_limit_rules = Table(
    "qos_bandwidth_limit_rules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("policy_id", String(36), ForeignKey("qos_policies.id", ondelete="CASCADE"), nullable=False),
    Column("max_kbps", Integer, nullable=False),
    Column("max_burst_kbps", Integer, nullable=False, default=0),
    Column("direction", String(16), nullable=False, default="egress"),
    UniqueConstraint("policy_id", "direction", name="uq_qos_bandwidth_limit_rules_policy_direction"),
)

# The QoS policy of a network (its ports without a policy of their own follow it).
network_qos = Table(
    "network_qos",
    metadata,
    Column("network_id", String(36), ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True),
    Column("policy_id", String(36), ForeignKey("qos_policies.id"), nullable=False),
)

# Per-project limits on ports and public addresses (NULL: the configured default).
network_quotas = Table(
    "network_quotas",
    metadata,
    Column("project_id", String(32), primary_key=True),
    Column("port", Integer, nullable=True),
    Column("public_ip", Integer, nullable=True),
)

# -- db at scale: an index for every filter the API offers (issue 8) -------------------------------
for _name, _table, _cols in (
    ("ix_networks_name", networks, ("name",)),
    ("ix_subnets_project", subnets, ("project_id",)),
    ("ix_subnets_cidr", subnets, ("cidr",)),
    ("ix_subnets_name", subnets, ("name",)),
    ("ix_images_name", images, ("name",)),
):
    Index(_name, *(_table.c[col] for col in _cols))
