"""The default policy: the personas, then one rule per route name (OpenStack's defaults for the same
calls, simplified). To add a route: give it a name in `route(...)` and a line here; the route-walk test
(tests/stack/test_policy_routes.py) fails for a route without one, and the route is refused until then.

Handlers still narrow what a caller sees (another project's server is a 404): these rules decide who may
call a route at all, and that a reader may only read."""

from __future__ import annotations

PERSONAS = {
    "admin": "role:admin and (scope:project or scope:system)",
    "member": "role:member and scope:project",
    "reader": "role:reader and (scope:project or scope:system)",
    "project_member": "rule:member or rule:admin",
    "project_reader": "rule:reader or rule:admin",
    "owner": "user_id:%(user_id)s",
    "admin_or_owner": "rule:admin or rule:owner",
    "domain_admin": "role:admin and scope:domain and domain_id:%(domain_id)s",
    # a reseller's admin (admin on its domain): the handlers narrow it to that domain's users and projects
    "domain_manager": "role:admin and scope:domain",
    "cloud_or_domain_admin": "rule:admin or rule:domain_manager",
    "anyone": "@",
}

_READ, _WRITE, _ADMIN, _ANY = "rule:project_reader", "rule:project_member", "rule:admin", "rule:anyone"
_DOMAIN = "rule:cloud_or_domain_admin"


def _each(rule: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, rule)


COMPUTE = {
    **_each(_ANY, "compute:versions", "compute:version", "compute:version/"),
    **_each(_READ, "compute:servers:index", "compute:servers:detail", "compute:servers:show",
            "compute:metadata:index", "compute:metadata:show", "compute:actions:index", "compute:actions:show",
            "compute:flavors", "compute:flavors:detail", "compute:flavors:show", "compute:flavor-specs",
            "compute:flavor-specs:show", "compute:keypairs", "compute:keypairs:show", "compute:limits",
            "compute:quota-sets:show", "compute:quota-sets:defaults", "compute:quota-sets:detail",
            "compute:availability-zones", "compute:usage:show", "compute:server-groups",
            "compute:server-groups:show", "compute:servers:security-groups"),
    **_each(_WRITE, "compute:servers:create", "compute:servers:update", "compute:servers:delete",
            "compute:servers:action", "compute:metadata:update", "compute:metadata:replace", "compute:metadata:set",
            "compute:metadata:delete", "compute:keypairs:create", "compute:keypairs:delete",
            "compute:server-groups:create", "compute:server-groups:delete"),
    **_each(_ADMIN, "compute:flavors:create", "compute:flavors:update", "compute:flavors:delete",
            "compute:flavor-access", "compute:flavor-specs:create", "compute:flavor-specs:update",
            "compute:flavor-specs:delete", "compute:services", "compute:services:update", "compute:services:delete",
            "compute:hypervisors", "compute:hypervisors:detail", "compute:hypervisors:statistics",
            "compute:hypervisors:show", "compute:hypervisors:uptime", "compute:hypervisors:search",
            "compute:hypervisors:servers", "compute:quota-sets:update", "compute:quota-sets:delete",
            "compute:availability-zones:detail", "compute:usage:index", "compute:aggregates",
            "compute:aggregates:create", "compute:aggregates:show", "compute:aggregates:update",
            "compute:aggregates:delete", "compute:aggregates:action", "compute:scheduler:explain",
            "compute:migrations:index", "compute:server_migrations:index", "compute:server_migrations:show",
            "compute:server_migrations:delete", "compute:canopy-inventory:index", "compute:canopy-inventory:create",
            "compute:canopy-inventory:show", "compute:canopy-inventory:update", "compute:canopy-inventory:delete"),
    **_each(_READ, "compute:server_tags:index", "compute:server_tags:show", "compute:server_password:show",
            "compute:interfaces:index", "compute:interfaces:show", "compute:images:index", "compute:images:detail",
            "compute:images:show"),
    # the handlers narrow these to the server's (or the image's) own project
    **_each(_WRITE, "compute:server_tags:update_all", "compute:server_tags:update", "compute:server_tags:delete",
            "compute:server_tags:delete_all", "compute:server_password:clear", "compute:interfaces:create",
            "compute:interfaces:delete", "compute:images:delete"),
    **_each(_ADMIN, "compute:quota-class-sets:show", "compute:quota-class-sets:update",
            "compute:usage-audit-log:index", "compute:usage-audit-log:show"),
    # No Keystone token: a new host presents its single-use enrollment token, which the handler checks.
    **_each(_ANY, "compute:canopy-enroll:create"),
}

IDENTITY = {
    **_each(_ANY, "identity:versions", "identity:version", "identity:version/", "identity:issue_token",
            # the handlers allow the token's owner or an admin
            "identity:check_token", "identity:revoke_token",
            # what an unscoped token is for: finding the scopes it may ask for
            "identity:auth_projects", "identity:auth_domains", "identity:auth_system", "identity:auth_catalog"),
    "identity:list_domains": "rule:admin or scope:domain",
    "identity:canopy-audit:list": _ADMIN,  # the audit trail (issue 14)
    "identity:get_domain": "rule:admin or domain_id:%(domain_id)s",
    **_each(_ADMIN, "identity:create_domain", "identity:update_domain", "identity:delete_domain"),
    **_each("rule:admin or rule:domain_admin", "identity:domain_grants", "identity:domain_grant"),
    "identity:list_projects": "rule:project_reader or scope:domain",
    "identity:get_project": "rule:admin or rule:domain_manager or (rule:reader and project_id:%(project_id)s)",
    **_each(_DOMAIN, "identity:create_project", "identity:update_project", "identity:delete_project",
            "identity:list_grants", "identity:grant", "identity:list_users", "identity:create_user",
            "identity:update_user", "identity:delete_user"),
    **_each(_ADMIN, "identity:check_grant", "identity:revoke_grant", "identity:list_roles", "identity:create_role",
            "identity:get_role", "identity:delete_role", "identity:list_role_assignments",
            "identity:list_role_inferences", "identity:project_group_grants", "identity:project_group_grant"),
    "identity:list_project_tags": "rule:admin or (rule:reader and project_id:%(project_id)s)",
    "identity:get_project_tag": "rule:admin or (rule:reader and project_id:%(project_id)s)",
    **_each(_ADMIN, "identity:update_project_tags", "identity:add_project_tag", "identity:delete_project_tag",
            "identity:delete_project_tags"),
    "identity:get_user": "rule:admin_or_owner or rule:domain_manager",
    **_each("rule:admin_or_owner", "identity:list_user_projects", "identity:list_user_groups",
            "identity:list_app_creds", "identity:get_app_cred", "identity:delete_app_cred"),
    # made by its user only (with the project-scoped token whose roles it takes), as Keystone's
    "identity:create_app_cred": "rule:owner",
    **_each(_ADMIN, "identity:list_regions", "identity:create_region", "identity:get_region",
            "identity:update_region", "identity:delete_region", "identity:list_services",
            "identity:create_service", "identity:get_service", "identity:update_service", "identity:delete_service",
            "identity:list_endpoints", "identity:create_endpoint", "identity:get_endpoint",
            "identity:update_endpoint", "identity:delete_endpoint", "identity:list_groups",
            "identity:create_group", "identity:get_group", "identity:update_group", "identity:delete_group",
            "identity:list_group_users", "identity:group_member", "identity:scoped_grants",
            "identity:scoped_grant"),
}

IMAGE = {
    **_each(_ANY, "image:versions_root", "image:versions", "image:schema_image", "image:schema_images",
            "image:schema_member", "image:schema_members", "image:schema_metadefs"),
    **_each(_READ, "image:list_images", "image:get_image", "image:download", "image:list_members",
            "image:get_member", "image:info_import", "image:info_stores", "image:metadefs"),
    # sharing: the owner adds and removes members, a member accepts or rejects (the handlers tell which)
    **_each(_WRITE, "image:create_image", "image:update_image", "image:delete_image", "image:tag", "image:upload",
            "image:create_member", "image:update_member", "image:delete_member", "image:metadefs_write"),
    **_each(_ADMIN, "image:deactivate", "image:reactivate"),
}

NETWORK = {
    **_each(_ANY, "network.versions", "network.resources", "network.extensions.list", "network.extensions.show"),
    **_each(_READ, "network.networks.list", "network.networks.show", "network.subnets.list",
            "network.subnets.show", "network.ports.list", "network.ports.show", "network.qos.rule_types",
            "network.qos.policies.list", "network.qos.policies.show", "network.qos.rules.list",
            "network.qos.rules.show", "network.quotas.show", "network.quotas.default", "network.quotas.details",
            "network.security_groups.list", "network.security_groups.show", "network.security_group_rules.list",
            "network.security_group_rules.show"),
    **_each(_WRITE, "network.networks.create", "network.networks.update", "network.networks.delete",
            "network.subnets.create", "network.subnets.update", "network.subnets.delete", "network.ports.create",
            "network.ports.update", "network.ports.delete", "network.security_groups.create",
            "network.security_groups.update", "network.security_groups.delete", "network.security_group_rules.create",
            "network.security_group_rules.delete"),
    # QoS policies and their rules are written by admins only, as Neutron's defaults
    **_each(_ADMIN, "network.qos.policies.create", "network.qos.policies.update", "network.qos.policies.delete",
            "network.qos.rules.create", "network.qos.rules.update", "network.qos.rules.delete",
            "network.segments.list", "network.segments.create", "network.segments.show",
            "network.segments.update", "network.segments.delete", "network.quotas.list", "network.quotas.update",
            "network.quotas.delete"),
}

DEFAULTS: dict[str, str] = {**PERSONAS, **COMPUTE, **IDENTITY, **IMAGE, **NETWORK}
