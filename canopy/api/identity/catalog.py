"""The service catalog announced in every token."""

from __future__ import annotations

from typing import Any

SERVICES = (
    ("identity", "keystone", "/identity"),
    ("compute", "nova", "/compute/v2.1"),
    ("network", "neutron", "/network"),
    ("image", "glance", "/image"),
)


def build_catalog(public_url: str, region: str) -> list[dict[str, Any]]:
    base = public_url.rstrip("/")
    catalog = []
    for kind, name, path in SERVICES:
        endpoints = [
            {"id": f"{name}-{iface}", "interface": iface, "region": region, "region_id": region, "url": base + path}
            for iface in ("public", "internal", "admin")
        ]
        catalog.append({"id": name, "type": kind, "name": name, "endpoints": endpoints})
    return catalog
