"""The service catalog announced in every token: the `services` and `endpoints` tables, whose URLs may
say `$(public_url)s` for the api's configured public URL (the seed writes them so)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from canopy.db import tables_global as g

SERVICES = (
    ("identity", "keystone", "/identity"),
    ("compute", "nova", "/compute/v2.1"),
    ("network", "neutron", "/network"),
    ("image", "glance", "/image"),
)
INTERFACES = ("public", "internal", "admin")
PUBLIC_URL = "$(public_url)s"


def endpoint_url(url: str, public_url: str) -> str:
    """An endpoint's URL with `$(public_url)s` replaced."""
    return url.replace(PUBLIC_URL, public_url.rstrip("/"))


def build_catalog(public_url: str, region: str) -> list[dict[str, Any]]:
    """The built-in catalog (for a database the seed has not filled)."""
    base = public_url.rstrip("/")
    catalog = []
    for kind, name, path in SERVICES:
        endpoints = [
            {"id": f"{name}-{iface}", "interface": iface, "region": region, "region_id": region, "url": base + path}
            for iface in INTERFACES
        ]
        catalog.append({"id": name, "type": kind, "name": name, "endpoints": endpoints})
    return catalog


def load_catalog(conn: Connection, public_url: str, region: str = "RegionOne") -> list[dict[str, Any]]:
    """The catalog from the enabled services and endpoints."""
    services = list(conn.execute(select(g.services).where(g.services.c.enabled.is_(True))
                                 .order_by(g.services.c.type)).mappings())
    if not services:
        return build_catalog(public_url, region)
    endpoints = list(conn.execute(select(g.endpoints).where(g.endpoints.c.enabled.is_(True))
                                  .order_by(g.endpoints.c.interface)).mappings())
    catalog = []
    for s in services:
        eps = [{"id": e["id"], "interface": e["interface"], "region": e["region_id"], "region_id": e["region_id"],
                "url": endpoint_url(e["url"], public_url)} for e in endpoints if e["service_id"] == s["id"]]
        catalog.append({"id": s["id"], "type": s["type"], "name": s["name"], "endpoints": eps})
    return catalog
