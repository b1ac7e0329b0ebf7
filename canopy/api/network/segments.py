"""Network v2.0 segments (routed provider networks), admin only as in Neutron; each segment also lists
the racks it serves (`canopy:racks`, "datacenter/rack"), which decides the segment of a host's ports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.http import empty_response, is_uuid, route
from canopy.api.network import common as cm
from canopy.api.network.networks import visible_network
from canopy.network import networks as nets
from canopy.network import segments as sg

FILTERS: dict[str, tuple[str, cm.Converter]] = {
    "id": ("id", cm.as_text), "name": ("name", cm.as_text), "network_id": ("network_id", cm.as_text),
    "network_type": ("network_type", cm.as_text), "physical_network": ("physical_network", cm.as_text),
    "segmentation_id": ("segmentation_id", cm.as_int), "description": ("description", cm.as_text),
}
UPDATE = frozenset({"name", "description", "canopy:racks"})
CREATE = UPDATE | {"network_id", "network_type", "physical_network", "segmentation_id", "project_id", "tenant_id"}



async def _segment(request: Request) -> dict[str, Any]:
    segment_id = request.path_params["segment_id"]
    row = await cm.global_db(request).read_fresh(sg.get_segment, segment_id) if is_uuid(segment_id) else None
    if row is None:
        raise cm.missing("segment", segment_id)
    return row


def provider(body: dict[str, Any]) -> dict[str, Any]:
    """network_type, physical_network and segmentation_id of a new segment."""
    kind = cm.text(body, "network_type")
    physnet = body.get("physical_network")
    seg = cm.integer(body, "segmentation_id", 1, nets.VXLAN_MAX)
    if kind == "flat":
        if not isinstance(physnet, str) or not physnet or len(physnet) > 64:
            raise cm.invalid("physical_network", "a flat segment needs a physical_network")
        if seg is not None:
            raise cm.invalid("segmentation_id", "a flat segment takes no segmentation_id")
        return {"network_type": "flat", "physical_network": physnet, "segmentation_id": None}
    if kind == "vxlan":
        if physnet is not None:
            raise cm.invalid("physical_network", "a vxlan segment takes no physical_network")
        if seg is None:
            raise cm.invalid("segmentation_id", "a vxlan segment needs a segmentation_id (its VNI)")
        return {"network_type": "vxlan", "physical_network": None, "segmentation_id": seg}
    raise cm.invalid("network_type", f"'{kind}' is not supported; use 'flat' or 'vxlan'")


def _described(body: dict[str, Any]) -> dict[str, Any]:
    values = {"name": cm.text(body, "name"), "description": cm.text(body, "description", 1024)}
    return {k: v for k, v in values.items() if v is not None}


@cm.neutron_errors
async def list_segments(request: Request) -> Response:
    """GET /v2.0/segments"""
    filters = cm.filters_of(request, FILTERS)
    limit, marker = cm.page_of(request)

    def work(conn: Connection) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
        rows = sg.list_segments(conn, filters=filters, limit=limit + 1, marker=marker)
        return rows, sg.racks_of(conn, [r["id"] for r in rows])

    rows, racks = await cm.global_db(request).read(work)
    return cm.collection(request, "segments", [sg.segment_view(r, racks[r["id"]]) for r in rows], limit)


@cm.neutron_errors
async def show_segment(request: Request) -> Response:
    """GET /v2.0/segments/{id}"""
    row = await _segment(request)
    racks = await cm.global_db(request).read_fresh(sg.racks_of, [row["id"]])
    return cm.item(request, "segment", sg.segment_view(row, racks[row["id"]]))


@cm.neutron_errors
async def create_segment(request: Request) -> Response:
    """POST /v2.0/segments"""
    body = await cm.body_of(request, "segment", CREATE)
    network_id = body.get("network_id")
    if not isinstance(network_id, str):
        raise cm.bad("Failed to parse request. Required attribute 'network_id' not specified", "HTTPBadRequest")
    network = await visible_network(request, network_id)
    values = {**_described(body), **provider(body), "network_id": network["id"]}
    racks = sg.parse_racks(body.get("canopy:racks", []))
    row = await cm.global_db(request).write(sg.create_segment, values, racks, cm.cloud_of(request).clock.now())
    return cm.item(request, "segment", sg.segment_view(row, [sg.rack_key(*r) for r in racks]), status=201)


@cm.neutron_errors
async def update_segment(request: Request) -> Response:
    """PUT /v2.0/segments/{id}: name, description and racks."""
    row = await _segment(request)
    body = await cm.body_of(request, "segment", UPDATE | {"network_id", "network_type", "physical_network",
                                                          "segmentation_id"})
    for key in ("network_id", "network_type", "physical_network", "segmentation_id"):
        if key in body and body[key] != row[key]:
            raise cm.bad(f"Cannot update read-only attribute {key}", "HTTPBadRequest")
    racks = sg.parse_racks(body["canopy:racks"]) if "canopy:racks" in body else None
    now = cm.cloud_of(request).clock.now()
    updated = await cm.global_db(request).write(sg.update_segment, row, _described(body), racks, now)
    shown = await cm.global_db(request).read_fresh(sg.racks_of, [row["id"]])
    return cm.item(request, "segment", sg.segment_view(updated, shown[row["id"]]))


@cm.neutron_errors
async def delete_segment(request: Request) -> Response:
    """DELETE /v2.0/segments/{id}: 409 while a subnet is on it."""
    row = await _segment(request)
    await cm.global_db(request).write(sg.delete_segment, row["id"])
    return empty_response()


ROUTES = [
    route("/v2.0/segments", list_segments, ["GET"], "network.segments.list"),
    route("/v2.0/segments", create_segment, ["POST"], "network.segments.create"),
    route("/v2.0/segments/{segment_id}", show_segment, ["GET"], "network.segments.show"),
    route("/v2.0/segments/{segment_id}", update_segment, ["PUT"], "network.segments.update"),
    route("/v2.0/segments/{segment_id}", delete_segment, ["DELETE"], "network.segments.delete"),
]
