"""`POST /servers/{id}/action`, server metadata, and `os-instance-actions`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, desc, select, update
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute import field_limits
from canopy.api.compute.common import (
    cell_db,
    check_unlocked,
    cloud_of,
    instance_not_found,
    load_visible_instance,
)
from canopy.api.compute.microversion import mv
from canopy.api.compute.server_actions import start_action
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, empty_response, json_response, read_object, require_admin, route
from canopy.clock import isotime_us
from canopy.db import tables_cell as c
from canopy.rpc.base import BusError, Target
from canopy.rpc.calls import ConsoleText
from canopy.rpc.calls_relay import RELAY_TIMEOUT_S, ReadConsole, relay_failure
from canopy.rpc.tasks import ActionPayload


async def _reboot(request: Request, uuid: str, arg: Any) -> None:
    kind = arg.get("type") if isinstance(arg, dict) else None
    if kind not in ("SOFT", "HARD", "soft", "hard"):
        raise bad_request(f"Invalid input for field/attribute reboot.type. Value: {kind}. "
                          f"'{kind}' is not one of ['HARD', 'Hard', 'SOFT', 'Soft']")
    await start_action(request, uuid, "reboot_hard" if kind.upper() == "HARD" else "reboot_soft")


async def _stop_soft(request: Request, uuid: str, arg: Any) -> None:
    timeout = None
    if isinstance(arg, dict) and "timeout" in arg:
        timeout = arg["timeout"]
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
            raise bad_request(f"Invalid input for field/attribute canopy-stopSoft.timeout. Value: {timeout}. "
                              "It must be a number of seconds between 1 and 3600.")
    elif arg is not None and not isinstance(arg, dict):
        raise bad_request("Invalid input for field/attribute canopy-stopSoft. It must be null or an object.")
    await start_action(request, uuid, "stop_soft", ActionPayload(timeout_s=timeout or None))


async def _reset_state(request: Request, uuid: str, arg: Any) -> None:
    require_admin(request)
    state = arg.get("state") if isinstance(arg, dict) else None
    if state not in ("active", "error"):
        raise bad_request(f"Invalid input for field/attribute os-resetState.state. Value: {state}. "
                          "'state' must be 'active' or 'error'")
    cloud, rc = cloud_of(request), ctx(request)

    def write(conn: Connection) -> None:
        load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        conn.execute(update(c.instances).where(c.instances.c.uuid == uuid)
                     .values(vm_state=state, task_state=None, updated_at=cloud.clock.now()))

    await cell_db(request).write(write)


def _simple(action: str) -> Any:
    async def run(request: Request, uuid: str, arg: Any) -> None:
        await start_action(request, uuid, action)

    return run


async def _console_output(request: Request, uuid: str, arg: Any) -> Response:
    """os-getConsoleOutput: the last `length` lines of the guest's serial console, read by its agent."""
    length = arg.get("length") if isinstance(arg, dict) else None
    if isinstance(length, str) and length.lstrip("-").isdigit():
        length = int(length)
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < -1):
        raise bad_request(f"Invalid input for field/attribute length. Value: {length}. "
                          "It must be an integer of at least -1.")
    if arg is not None and not isinstance(arg, dict):
        raise bad_request("Invalid input for field/attribute os-getConsoleOutput. It must be an object.")
    rc, cloud = ctx(request), cloud_of(request)
    inst = await cell_db(request).read(load_visible_instance, uuid, rc.project_id, rc.is_admin)
    if not inst["host"] or inst["vm_state"] == "building":
        raise ApiError(409, f"Instance {uuid} is not ready")
    ask = ReadConsole(host=inst["host"], instance_uuid=uuid, length=None if length in (None, -1) else length)
    try:
        reply = await cloud.bus.call(Target("conductor"), ask, timeout=RELAY_TIMEOUT_S)
    except BusError as exc:
        raise ApiError(409, f"The console of instance {uuid} cannot be read: "
                            f"{relay_failure(exc, inst['host'])}") from None
    assert isinstance(reply, ConsoleText)
    return json_response({"output": reply.output})


ACTIONS = {
    "os-start": _simple("start"),
    "os-stop": _simple("stop"),
    "canopy-stopSoft": _stop_soft,
    "canopy-stopHard": _simple("stop_hard"),
    "reboot": _reboot,
    "os-resetState": _reset_state,
    "pause": _simple("pause"),
    "unpause": _simple("unpause"),
    "suspend": _simple("suspend"),
    "resume": _simple("resume"),
    "os-getConsoleOutput": _console_output,
}


async def server_action(request: Request) -> Response:
    uuid = request.path_params["server_id"]
    body = await read_object(request)
    if len(body) != 1:
        raise bad_request("Exactly one action is expected in the request body.")
    name, arg = next(iter(body.items()))
    handler = ACTIONS.get(name)
    if handler is None:
        raise bad_request(f"There is no such action: {name}")
    result = await handler(request, uuid, arg)
    return result if isinstance(result, Response) else empty_response(202)


# -- metadata ------------------------------------------------------------------------------------

def _check_metadata(meta: Any, field: str = "metadata") -> dict[str, str]:
    return field_limits.check_metadata(meta, field)


async def _change_metadata(request: Request, change: Any) -> dict[str, str]:
    uuid, rc, cloud = request.path_params["server_id"], ctx(request), cloud_of(request)

    def write(conn: Connection) -> dict[str, str]:
        inst = load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        check_unlocked(inst, rc.is_admin)
        meta = change(dict(inst["metadata"] or {}))
        field_limits.check_metadata_count(meta)
        conn.execute(update(c.instances).where(c.instances.c.uuid == uuid)
                     .values(metadata=meta, updated_at=cloud.clock.now()))
        return meta

    return await cell_db(request).write(write)


async def metadata_index(request: Request) -> Response:
    uuid, rc = request.path_params["server_id"], ctx(request)
    inst = await cell_db(request).read(load_visible_instance, uuid, rc.project_id, rc.is_admin)
    return json_response({"metadata": inst["metadata"] or {}})


async def metadata_update(request: Request) -> Response:
    meta = _check_metadata(await read_object(request, "metadata"))
    result = await _change_metadata(request, lambda cur: {**cur, **meta})
    return json_response({"metadata": result})


async def metadata_replace(request: Request) -> Response:
    meta = _check_metadata(await read_object(request, "metadata"))
    result = await _change_metadata(request, lambda cur: dict(meta))
    return json_response({"metadata": result})


async def metadata_show(request: Request) -> Response:
    uuid, key, rc = request.path_params["server_id"], request.path_params["key"], ctx(request)
    inst = await cell_db(request).read(load_visible_instance, uuid, rc.project_id, rc.is_admin)
    if key not in (inst["metadata"] or {}):
        raise ApiError(404, "Metadata item was not found")
    return json_response({"meta": {key: inst["metadata"][key]}})


async def metadata_set(request: Request) -> Response:
    key = request.path_params["key"]
    meta = _check_metadata(await read_object(request, "meta"), "meta")
    if list(meta) != [key]:
        raise bad_request("Request body and URI mismatch")
    await _change_metadata(request, lambda cur: {**cur, **meta})
    return json_response({"meta": meta})


async def metadata_delete(request: Request) -> Response:
    key = request.path_params["key"]

    def drop(cur: dict[str, str]) -> dict[str, str]:
        if key not in cur:
            raise ApiError(404, "Metadata item was not found")
        return {k: v for k, v in cur.items() if k != key}

    await _change_metadata(request, drop)
    return empty_response(204)


# -- os-instance-actions -------------------------------------------------------------------------

def _load_actions(conn: Connection, uuid: str, project_id: str | None, is_admin: bool,
                  request_id: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    inst = conn.execute(select(c.instances.c.project_id).where(c.instances.c.uuid == uuid)).first()
    if inst is None or (not is_admin and inst[0] != project_id):
        raise instance_not_found(uuid)
    a = c.instance_actions.c
    q = select(c.instance_actions).where(a.instance_uuid == uuid).order_by(desc(a.id))
    if request_id:
        q = q.where(a.request_id == request_id)
    actions = [dict(r) for r in conn.execute(q).mappings().all()]
    events: list[dict[str, Any]] = []
    if request_id and actions:
        e = c.instance_action_events.c
        events = [dict(r) for r in conn.execute(select(c.instance_action_events).where(
            e.action_id == actions[0]["id"]).order_by(e.id)).mappings().all()]
    return actions, events


def _render_action(row: dict[str, Any], version: tuple[int, int]) -> dict[str, Any]:
    body = {"action": row["action"], "instance_uuid": row["instance_uuid"], "request_id": row["request_id"],
            "user_id": row["user_id"], "project_id": row["project_id"], "start_time": isotime_us(row["start_time"]),
            "message": row["message"]}
    if version >= (2, 58):
        body["updated_at"] = isotime_us(row["updated_at"])
    return body


def _render_event(row: dict[str, Any], version: tuple[int, int], is_admin: bool, project_id: str) -> dict[str, Any]:
    from canopy.api.compute.server_views import host_id

    body: dict[str, Any] = {"event": row["event"], "start_time": isotime_us(row["start_time"]),
                            "finish_time": isotime_us(row["finish_time"]), "result": row["result"]}
    if is_admin:
        body["traceback"] = row["traceback"]
    if version >= (2, 62):
        body["hostId"] = host_id(project_id, row["host"])
        if is_admin:
            body["host"] = row["host"]
    if version >= (2, 84) and is_admin:
        body["details"] = row["details"]
    elif version >= (2, 84):
        body["details"] = row["details"] if row["result"] == "Error" else None
    return body


async def instance_actions(request: Request) -> Response:
    uuid, rc = request.path_params["server_id"], ctx(request)
    actions, _ = await cell_db(request).read(_load_actions, uuid, rc.project_id, rc.is_admin, None)
    return json_response({"instanceActions": [_render_action(a, mv(request)) for a in actions]})


async def instance_action(request: Request) -> Response:
    uuid, request_id, rc = request.path_params["server_id"], request.path_params["request_id"], ctx(request)
    actions, events = await cell_db(request).read(_load_actions, uuid, rc.project_id, rc.is_admin, request_id)
    if not actions:
        raise ApiError(404, f"Action for request_id {request_id} on instance {uuid} not found")
    body = _render_action(actions[0], mv(request))
    project = actions[0]["project_id"] or ""
    body["events"] = [_render_event(e, mv(request), rc.is_admin, project) for e in events]
    return json_response({"instanceAction": body})



ROUTES = [
    route("/v2.1/servers/{server_id}/action", server_action, ["POST"], "compute:servers:action"),
    route("/v2.1/servers/{server_id}/metadata", metadata_index, ["GET"], "compute:metadata:index"),
    route("/v2.1/servers/{server_id}/metadata", metadata_update, ["POST"], "compute:metadata:update"),
    route("/v2.1/servers/{server_id}/metadata", metadata_replace, ["PUT"], "compute:metadata:replace"),
    route("/v2.1/servers/{server_id}/metadata/{key}", metadata_show, ["GET"], "compute:metadata:show"),
    route("/v2.1/servers/{server_id}/metadata/{key}", metadata_set, ["PUT"], "compute:metadata:set"),
    route("/v2.1/servers/{server_id}/metadata/{key}", metadata_delete, ["DELETE"], "compute:metadata:delete"),
    route("/v2.1/servers/{server_id}/os-instance-actions", instance_actions, ["GET"], "compute:actions:index"),
    route("/v2.1/servers/{server_id}/os-instance-actions/{request_id}", instance_action, ["GET"],
          "compute:actions:show"),
]
