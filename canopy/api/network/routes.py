"""Network v2.0 routes: the version document, resources and extensions, then networks, subnets, ports."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.errors import ApiError
from canopy.api.http import json_response, route
from canopy.api.network import networks, ports, qos, quotas, secgroups, segments, subnets

UPDATED = "2026-01-01T00:00:00-00:00"
EXTENSIONS = {
    "provider": ("Provider Network", "Expose mapping of virtual networks to physical networks"),
    "external-net": ("Neutron external network", "Adds external network attribute to network resource."),
    "allowed-address-pairs": ("Allowed Address Pairs", "Provides allowed address pairs"),
    "port-security": ("Port Security", "Provides port security"),
    "binding": ("Port Binding", "Expose port bindings of a virtual port to external application"),
    "standard-attr-description": ("standard-attr-description", "Extension to add descriptions to standard "
                                                               "attributes"),
    "standard-attr-timestamp": ("Resource timestamps", "Adds created_at and updated_at fields to all Neutron "
                                                       "resources that have Neutron standard attributes."),
    "project-id": ("project_id field enabled", "Extension that indicates that project_id field is enabled."),
    "net-mtu": ("Network MTU", "Provides MTU attribute for a network resource."),
    "net-mtu-writable": ("Network MTU (writable)", "Provides a writable MTU attribute for a network resource."),
    "pagination": ("Pagination support", "Extension that indicates that pagination is enabled."),
    "segment": ("Segment", "Segments extension."),
    "qos": ("Quality of Service", "The Quality of Service extension."),
    "qos-bw-limit-direction": ("Direction for QoS bandwidth limit rule", "Allow to configure QoS bandwidth limit "
                                                                        "rule with specific direction: ingress or "
                                                                        "egress"),
    "qos-rule-type-details": ("QoS rule type details", "Expose details about QoS rule types supported by loaded "
                                                      "backend drivers"),
    "security-group": ("security-group", "The security groups extension."),
    "quotas": ("Quota management support", "Expose functions for quotas management per project"),
    "quota_details": ("Quota details management support", "Expose functions for quotas usage statistics per "
                                                          "project"),
}
RESOURCES = (("network", "networks"), ("subnet", "subnets"), ("port", "ports"))


def is_public(method: str, path: str) -> bool:
    """The version document is readable without a token."""
    return method == "GET" and path in ("/", "/v2.0", "/v2.0/")


async def versions(request: Request) -> Response:
    """GET /: the one API version."""
    href = f"{request.base_url}v2.0/"
    return json_response({"versions": [{"id": "v2.0", "status": "CURRENT",
                                        "links": [{"href": href, "rel": "self"}]}]})


async def resources(request: Request) -> Response:
    """GET /v2.0: the collections this API serves."""
    base = f"{request.base_url}v2.0"
    return json_response({"resources": [
        {"name": name, "collection": coll, "links": [{"href": f"{base}/{coll}", "rel": "self"}]}
        for name, coll in RESOURCES]})


def extension_view(alias: str) -> dict[str, object]:
    """One extension in Neutron's shape."""
    name, description = EXTENSIONS[alias]
    return {"alias": alias, "name": name, "description": description, "updated": UPDATED, "links": []}


async def list_extensions(request: Request) -> Response:
    """GET /v2.0/extensions"""
    return json_response({"extensions": [extension_view(a) for a in sorted(EXTENSIONS)]})


async def show_extension(request: Request) -> Response:
    """GET /v2.0/extensions/{alias}"""
    alias = request.path_params["alias"]
    if alias not in EXTENSIONS:
        raise ApiError(404, f"Extension with alias {alias} does not exist", neutron_type="HTTPNotFound")
    return json_response({"extension": extension_view(alias)})


ROUTES: list[BaseRoute] = [
    route("/", versions, ["GET"], "network.versions"),
    route("/v2.0", resources, ["GET"], "network.resources"),
    route("/v2.0/", resources, ["GET"], "network.resources"),
    route("/v2.0/extensions", list_extensions, ["GET"], "network.extensions.list"),
    route("/v2.0/extensions/{alias}", show_extension, ["GET"], "network.extensions.show"),
    *networks.ROUTES,
    *subnets.ROUTES,
    *ports.ROUTES,
    *segments.ROUTES,
    *qos.ROUTES,
    *quotas.ROUTES,
    *secgroups.ROUTES,
]
