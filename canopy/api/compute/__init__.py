"""Compute v2.1 (Nova-shaped) with microversions 2.1–2.87."""

from __future__ import annotations

from canopy.api.app import Service
from canopy.api.compute import (
    actions,
    aggregates,
    flavors,
    hypervisors,
    keypairs,
    microversion,
    os_services,
    quotas,
    scheduler_explain,
    server_groups,
    server_mobility,
    server_secgroup_actions,
    server_secgroups,
    servers,
    usage,
    versions,
    zones,
)
from canopy.api.http import route

PUBLIC = {("GET", "/"), ("GET", "/v2.1"), ("GET", "/v2.1/")}


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC


actions.ACTIONS.update(server_mobility.ACTIONS)  # resize, migrations, snapshots, rebuild, rescue
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
        *zones.ROUTES,
        *usage.ROUTES,
        *aggregates.ROUTES,
        *server_groups.ROUTES,
        *scheduler_explain.ROUTES,
        *server_mobility.ROUTES,
        *server_secgroups.ROUTES,
    ]
    return Service("compute", routes, is_public, microversion.prepare)
