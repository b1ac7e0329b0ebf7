"""Canopy: a cloud control plane for hosting providers that speaks the OpenStack APIs."""

__version__ = "0.1.0"
