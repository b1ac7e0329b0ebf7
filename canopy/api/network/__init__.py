"""Network v2.0 (Neutron-shaped): networks, subnets, ports and their fixed IPs."""

from __future__ import annotations

from canopy.api.app import Service
from canopy.api.network import routes


def service() -> Service:
    return Service("network", routes.ROUTES, routes.is_public)
