"""Compute v2.1 (Nova-shaped) with microversions."""

from __future__ import annotations

from canopy.api.app import Service


def service() -> Service:
    return Service("compute", [], lambda m, p: True)
