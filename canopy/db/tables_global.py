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

# The IDs of deleted images: an ID once used is never given to another image, so nobody can boot
# someone else's bytes by an ID they trusted (Glance keeps deleted rows for the same reason).
deleted_images = Table(
    "deleted_images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("deleted_at", UTCDateTime, nullable=False),
)

# Projects an image is shared with (visibility "shared"): each member accepts, rejects or leaves it pending.
image_members = Table(
    "image_members",
    metadata,
    Column("image_id", String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("member_id", String(255), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_image_members_member", "member_id", "status"),
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

# os-quota-class-sets: limits by class (NULL: the configured default); `default` is the one Nova uses.
quota_classes = Table(
    "quota_classes",
    metadata,
    Column("class_name", String(255), primary_key=True),
    Column("instances", Integer, nullable=True),
    Column("cores", Integer, nullable=True),
    Column("ram", Integer, nullable=True),
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
    Column("security_group", Integer, nullable=True),
    Column("security_group_rule", Integer, nullable=True),
)

# -- security groups (issue 15): global, as a project's groups span its cells ------------------------

# `tag` names the group in the flows of every host (REG_GROUP): unique, drawn at random.
security_groups = Table(
    "security_groups",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(32), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("tag", Integer, nullable=False, unique=True),
    Column("is_default", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_security_groups_project", "project_id", "name"),
)

# `mark` is the ct_mark of the connections the rule allows and its conjunction id: unique, random.
security_group_rules = Table(
    "security_group_rules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("security_group_id", String(36), ForeignKey("security_groups.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", String(32), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("ethertype", String(4), nullable=False),
    Column("protocol", String(40), nullable=True),
    Column("port_range_min", Integer, nullable=True),
    Column("port_range_max", Integer, nullable=True),
    Column("remote_ip_prefix", String(64), nullable=True),
    Column("remote_group_id", String(36), nullable=True),
    Column("description", Text, nullable=False, default=""),
    Column("mark", Integer, nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_security_group_rules_group", "security_group_id"),
    Index("ix_security_group_rules_remote", "remote_group_id"),
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

# --- identity beyond users and projects (issue 14 and 16): revocations, domains, the catalog, groups,
# grants other than user-on-project, project tags, application credentials.

revocation_events = Table(
    "revocation_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("audit_id", String(64), nullable=True),
    Column("user_id", String(64), nullable=True),
    Column("project_id", String(64), nullable=True),
    Column("domain_id", String(64), nullable=True),
    Column("app_cred_id", String(64), nullable=True),
    # Microseconds since the epoch: tokens issued at or before this are revoked.
    Column("issued_before_us", BigInteger, nullable=False),
    Column("revoked_at_us", BigInteger, nullable=False),
    # After this no token the event covers can still be valid: the row may be pruned.
    Column("expires_at_us", BigInteger, nullable=False),
    Index("ix_revocation_events_revoked_at", "revoked_at_us"),
)

domains = Table(
    "domains",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
)

regions = Table(
    "catalog_regions",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("parent_region_id", String(255), nullable=True),
)

services = Table(
    "catalog_services",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
)

endpoints = Table(
    "catalog_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("service_id", String(64), ForeignKey("catalog_services.id", ondelete="CASCADE"), nullable=False),
    Column("interface", String(8), nullable=False),
    Column("region_id", String(255), nullable=True),
    Column("url", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Index("ix_catalog_endpoints_service", "service_id"),
)

groups = Table(
    "user_groups",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("domain_id", String(64), nullable=False, default="default"),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False, default=""),
    UniqueConstraint("domain_id", "name", name="uq_user_groups_domain_name"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(32), ForeignKey("user_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_group_members_user", "user_id"),
)

# Role grants other than a user's on a project (those stay in role_assignments): a user's or a group's,
# on a project, a domain or the system (target_id "all").
grants = Table(
    "grants",
    metadata,
    Column("actor_type", String(8), primary_key=True),
    Column("actor_id", String(32), primary_key=True),
    Column("target_type", String(8), primary_key=True),
    Column("target_id", String(64), primary_key=True),
    Column("role_id", String(32), ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_grants_target", "target_type", "target_id"),
)

project_tags = Table(
    "project_tags",
    metadata,
    Column("project_id", String(32), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(255), primary_key=True),
)

application_credentials = Table(
    "application_credentials",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("secret_hash", String(255), nullable=False),
    Column("roles", JSONType, nullable=False, default=list),
    Column("unrestricted", Boolean, nullable=False, default=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("user_id", "name", name="uq_application_credentials_user_name"),
)

# -- cells: the physical inventory (issue 19) ---------------------------------------------------------
# The physical view beside the logical one (zones, aggregates, cells): a data center holds rows, a row
# racks, a rack hosts. A rack is cabled to one network segment; setting it writes the rack's line of
# `segment_racks` for that segment's network, which the scheduler's reachability reads.

datacenters = Table(
    "datacenters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", String(255), nullable=False, default=""),
    Column("cell_name", String(64), nullable=True),  # the cell that runs this data center
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

datacenter_rows = Table(
    "datacenter_rows",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("datacenter", String(64), ForeignKey("datacenters.name"), nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("datacenter", "name", name="uq_datacenter_rows_datacenter_name"),
)

racks = Table(
    "racks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("datacenter", String(64), ForeignKey("datacenters.name"), nullable=False),
    Column("row_id", String(36), ForeignKey("datacenter_rows.id"), nullable=False),
    Column("segment_id", String(36), ForeignKey("network_segments.id", ondelete="SET NULL"), nullable=True),
    Column("description", String(255), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("datacenter", "name", name="uq_racks_datacenter_name"),
    Index("ix_racks_row", "row_id"),
)

# A host as the inventory knows it, before and after its agent enrolls (`state`: expected, enrolled,
# draining, retired). Its name is the agent's host name, the key of host_mappings and the cell's hosts.
inventory_hosts = Table(
    "inventory_hosts",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("rack_id", String(36), ForeignKey("racks.id"), nullable=False),
    Column("serial", String(64), nullable=True, unique=True),
    Column("macs", JSONType, nullable=False, default=list),
    Column("state", String(16), nullable=False, default="expected"),
    Column("description", String(255), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_inventory_hosts_rack", "rack_id"),
)

# -- cells: enrollment (issue 19) ----------------------------------------------------------------------
# A single-use, expiring token that lets one agent enroll into one cell. Only its SHA-256 is stored (the
# token is 256 random bits: a fast hash is enough). `host`: the pre-registered host it was issued for
# (NULL: self-registration, matched by serial, MAC or rack labels). `used_at`/`used_by`: consumed.
enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("cell_name", String(64), nullable=False),
    Column("host", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("used_by", String(255), nullable=True),
    Index("ix_enrollment_tokens_host", "host"),
)

# What an enrolled host reported, when, and the hash of the per-host bus secret it was given.
inventory_hosts.append_column(Column("hardware", JSONType, nullable=True))
inventory_hosts.append_column(Column("enrolled_at", UTCDateTime, nullable=True))
inventory_hosts.append_column(Column("credential_hash", String(64), nullable=True))
Index("ix_inventory_hosts_state", inventory_hosts.c.state)

# -- audit (issue 14) -----------------------------------------------------------------------------------
# One row per mutating API call (POST/PUT/PATCH/DELETE on any service), written in batches off the
# request path by canopy/api/audit.py. Read by admins (GET /identity/v3/canopy-audit) and exported as CADF.
audit_records = Table(
    "audit_records",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=True),
    Column("user_name", String(255), nullable=True),
    Column("project_id", String(64), nullable=True),
    Column("domain_id", String(64), nullable=True),
    Column("service", String(16), nullable=False),
    Column("method", String(8), nullable=False),
    Column("route", String(128), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("target_id", String(255), nullable=True),
    Column("source", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Index("ix_audit_records_at", "at", "id"),
    Index("ix_audit_records_project_at", "project_id", "at"),
)
