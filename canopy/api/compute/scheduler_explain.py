"""Compute API extension (admin): `POST /compute/v2.1/canopy-scheduler/explain` — where a hypothetical
server would go, and how many hosts each filter removed and why, without placing anything.

The body is a server create body (`server` with `flavorRef`, optional `imageRef`, `networks`,
`availability_zone` including `zone:host`, `os:scheduler_hints`), plus an optional `project_id` to ask
on a project's behalf (tenant isolation) and `top` (how many candidates to list). The running
scheduler answers from its own index, so the explanation is the one a NoValidHost fault would give.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.common import cloud_of
from canopy.api.compute.server_create import find_flavor
from canopy.api.compute.server_groups import parse_hints, resolve_hints
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, is_uuid, json_response, read_object, route
from canopy.db import tables_global as g
from canopy.rpc.base import BusError, Target
from canopy.rpc.calls import ExplainPlacement, PlacementExplained, SelectHost
from canopy.rpc.tasks import BuildPayload, FlavorSnapshot, NetworkChoice
from canopy.scheduler.client import select_host_message


def _image(conn: Any, image_id: str) -> dict[str, Any] | None:
    from sqlalchemy import select

    row = conn.execute(select(g.images.c.id, g.images.c.properties).where(g.images.c.id == image_id)).mappings().first()
    return dict(row) if row else None


async def _request(request: Request, body: dict[str, Any]) -> SelectHost:
    rc = ctx(request)
    server = body.get("server")
    if not isinstance(server, dict) or "flavorRef" not in server:
        raise bad_request("Invalid input for field/attribute server. 'flavorRef' is a required property")
    asked = parse_hints(body)  # checked before anything is looked up
    cloud = cloud_of(request)
    flavor = await find_flavor(cloud, str(server["flavorRef"]), ctx(request))
    image = None
    if server.get("imageRef"):
        image_id = str(server["imageRef"]).rstrip("/").rsplit("/", 1)[-1]
        image = await cloud.dbs.global_db.read(_image, image_id) if is_uuid(image_id) else None
        if image is None:
            raise bad_request(f"Image {server['imageRef']} could not be found.")
    networks: list[Any] = server["networks"] if isinstance(server.get("networks"), list) else []
    zone, _, host = str(server.get("availability_zone") or "").partition(":")
    hints = await resolve_hints(request, asked)
    payload = BuildPayload(
        flavor=FlavorSnapshot.of_row(flavor), image_id="", name="", hostname="",
        project_id=str(body.get("project_id") or rc.project_id or ""), availability_zone=zone or None,
        force_host=host.split(":")[0] or server.get("host") or None,
        networks=[NetworkChoice(network={"id": n["uuid"]}) for n in networks if isinstance(n, dict) and n.get("uuid")],
        scheduler_hints=hints, image_properties=dict((image or {}).get("properties") or {}))
    return select_host_message("", payload)


async def explain(request: Request) -> Response:
    """POST /canopy-scheduler/explain."""
    body = await read_object(request)
    msg = await _request(request, body)
    top = body.get("top", 5)
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 100:
        raise bad_request(f"Invalid input for field/attribute top. Value: {top}. It must be an integer from 0 to 100")
    try:
        reply = await cloud_of(request).bus.call(Target("scheduler"), ExplainPlacement(request=msg, top=top),
                                                 timeout=30)
    except BusError as exc:
        raise ApiError(503, f"No scheduler answered: {exc}") from None
    assert isinstance(reply, PlacementExplained)
    return json_response({"explanation": reply.explanation})


ROUTES = [route("/v2.1/canopy-scheduler/explain", explain, ["POST"], "compute:scheduler:explain")]
