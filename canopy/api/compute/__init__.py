"""Compute v2.1 (Nova-shaped) with microversions 2.1–2.87."""

from __future__ import annotations

from canopy.api.app import Service
from canopy.api.compute import (
    actions,
    aggregates,
    enroll,
    flavors,
    hypervisors,
    images_proxy,
    inventory,
    keypairs,
    microversion,
    os_services,
    quota_classes,
    quotas,
    scheduler_explain,
    server_groups,
    server_interfaces,
    server_lock,
    server_mobility,
    server_password,
    server_secgroup_actions,
    server_secgroups,
    server_shelve,
    server_tags,
    servers,
    usage,
    usage_audit_log,
    versions,
    zones,
)
from canopy.api.http import route

# The enrollment route authenticates by its enrollment token, not a Keystone token (issue 19).
PUBLIC = {("GET", "/"), ("GET", "/v2.1"), ("GET", "/v2.1/"), ("POST", enroll.PATH)}


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC


actions.ACTIONS.update(server_mobility.ACTIONS)  # resize, migrations, snapshots, rebuild, rescue
actions.ACTIONS.update(server_lock.ACTIONS)
actions.ACTIONS.update(server_shelve.ACTIONS)  # shelve, shelveOffload, unshelve, createBackup
actions.ACTIONS.update(server_secgroup_actions.ACTIONS)  # addSecurityGroup, removeSecurityGroup


def service() -> Service:
    routes = [
        route("/", versions.versions, ["GET"], "compute:versions"),
        route("/v2.1", versions.version_v21, ["GET"], "compute:version"),
        route("/v2.1/", versions.version_v21, ["GET"], "compute:version/"),
        *servers.ROUTES,
        *actions.ROUTES,
        *flavors.ROUTES,
        *keypairs.ROUTES,
        *os_services.ROUTES,
        *hypervisors.ROUTES,
        *quotas.ROUTES,
        *quota_classes.ROUTES,
        *images_proxy.ROUTES,
        *usage_audit_log.ROUTES,
        *zones.ROUTES,
        *usage.ROUTES,
        *aggregates.ROUTES,
        *server_groups.ROUTES,
        *scheduler_explain.ROUTES,
        *server_mobility.ROUTES,
        *inventory.ROUTES,
        *enroll.ROUTES,
        *server_tags.ROUTES,
        *server_interfaces.ROUTES,
        *server_password.ROUTES,
        *server_secgroups.ROUTES,
    ]
    return Service("compute", routes, is_public, microversion.prepare)
