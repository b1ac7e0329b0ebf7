"""Image v2 (Glance-shaped): image records, and their data in a local store folder."""

from __future__ import annotations

from canopy.api.app import Service
from canopy.api.image import discovery, members, routes


def service() -> Service:
    return Service("image", [*routes.ROUTES, *members.ROUTES, *discovery.ROUTES], routes.is_public,
                   streams_body=routes.streams_body)
