"""Compute API: os-services (admin). The cell's `services` rows with their liveness; disabling an agent's
service also disables its host for the scheduler, which reads `hosts.enabled` through its change feed."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, delete, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute.common import cell_db, cloud_of
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import empty_response, is_uuid, json_response, read_object, route, validate
from canopy.clock import isotime
from canopy.db import tables_cell as c
from canopy.db import tables_global as g

AGENT_BINARY = "canopy-agent"
# Nova's binary names, accepted wherever a binary is given (runbooks and monitoring use them).
NOVA_BINARIES = {"nova-compute": AGENT_BINARY, "nova-conductor": "canopy-conductor",
                 "nova-scheduler": "canopy-scheduler"}
INTERNAL_ZONE = "internal"
s, h = c.services.c, c.hosts.c


def canopy_binary(binary: str) -> str:
    """Canopy's name for a service binary given by its Nova name (or already by Canopy's)."""
    return NOVA_BINARIES.get(binary, binary)


class ActionBody(BaseModel):
    """The body of the pre-2.53 actions (PUT /os-services/disable and friends)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    host: str = Field(min_length=1, max_length=255)
    binary: str = Field(min_length=1, max_length=255)
    disabled_reason: str | None = Field(default=None, max_length=255)
    forced_down: bool | None = Field(default=None, strict=False)


class UpdateBody(BaseModel):
    """The body of PUT /os-services/{uuid} (2.53+)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    status: Literal["enabled", "disabled"] | None = None
    disabled_reason: str | None = Field(default=None, min_length=1, max_length=255)
    forced_down: bool | None = Field(default=None, strict=False)


def is_up(row: Any, now: dt.datetime, down_s: float) -> bool:
    """A service is up when it has reported within `down_s` seconds and isn't forced down."""
    if row is None or row["forced_down"] or row["last_seen_at"] is None:
        return False
    return bool(now - row["last_seen_at"] <= dt.timedelta(seconds=down_s))


def liveness(request: Request) -> tuple[dt.datetime, float]:
    """The current time and the service-down threshold, for `is_up`."""
    cloud = cloud_of(request)
    return cloud.clock.now(), cloud.settings.scheduler.service_down_s


def render_service(row: Any, request: Request) -> dict[str, Any]:
    """A service as Nova shows it at the request's microversion."""
    version = mv(request)
    now, down_s = liveness(request)
    zone = (row["availability_zone"] or "nova") if row["binary"] == AGENT_BINARY else INTERNAL_ZONE
    out: dict[str, Any] = {
        "id": row["uuid"] if version >= (2, 53) else row["id"], "binary": row["binary"], "host": row["host"],
        "zone": zone, "status": "disabled" if row["disabled"] else "enabled",
        "state": "up" if is_up(row, now, down_s) else "down",
        "updated_at": isotime(row["last_seen_at"] or row["updated_at"]), "disabled_reason": row["disabled_reason"],
    }
    if version >= (2, 11):
        out["forced_down"] = row["forced_down"]
    return out


def services_with_zone() -> Any:
    """Services with their host's availability zone (null for services on no known host)."""
    joined = c.services.outerjoin(c.hosts, h.name == s.host)
    return select(c.services, h.availability_zone).select_from(joined)


def _list(conn: Connection, host: str | None, binary: str | None) -> list[dict[str, Any]]:
    q = services_with_zone().order_by(s.id)
    if host:
        q = q.where(s.host == host)
    if binary:
        q = q.where(s.binary == binary)
    return [dict(r) for r in conn.execute(q).mappings()]


async def list_services(request: Request) -> Response:
    """GET /os-services (filters: host, binary)."""
    args = request.query_params
    binary = args.get("binary")
    rows = await cell_db(request).read(_list, args.get("host"), canopy_binary(binary) if binary else None)
    return json_response({"services": [render_service(r, request) for r in rows]})


def _not_updatable(binary: str) -> ApiError:
    return bad_request(f"Updating a {binary} service is not supported. Only {AGENT_BINARY} services can be updated.")


def _apply(conn: Connection, where: Any, changes: dict[str, Any], now: dt.datetime) -> dict[str, Any] | None:
    """Change one agent service (and, for enable/disable, its host); the updated row, or None if missing."""
    row = conn.execute(select(c.services).where(where)).mappings().first()
    if row is None:
        return None
    if row["binary"] != AGENT_BINARY:
        raise _not_updatable(row["binary"])
    conn.execute(update(c.services).where(s.id == row["id"]).values(updated_at=now, **changes))
    if "disabled" in changes:
        conn.execute(update(c.hosts).where(h.name == row["host"]).values(
            enabled=not changes["disabled"], disabled_reason=changes.get("disabled_reason"), updated_at=now))
    return dict(conn.execute(services_with_zone().where(s.id == row["id"])).mappings().one())


async def _action(request: Request, action: str, raw: dict[str, Any]) -> Response:
    body = validate(ActionBody, raw)
    if action == "disable-log-reason" and body.disabled_reason is None:
        raise bad_request("Missing disabled reason field")
    if action == "force-down" and body.forced_down is None:
        raise bad_request("Missing forced_down field")
    binary = canopy_binary(body.binary)
    if binary != AGENT_BINARY:
        raise _not_updatable(body.binary)
    out: dict[str, Any] = {"host": body.host, "binary": body.binary}
    if action == "force-down":
        changes: dict[str, Any] = {"forced_down": body.forced_down}
        out["forced_down"] = body.forced_down
    else:
        disabled = action != "enable"
        reason = body.disabled_reason if action == "disable-log-reason" else None
        changes = {"disabled": disabled, "disabled_reason": reason}
        out["status"] = "disabled" if disabled else "enabled"
        if reason:
            out["disabled_reason"] = reason
    found = await cell_db(request).write(_apply, (s.host == body.host) & (s.binary == binary), changes,
                                         cloud_of(request).clock.now())
    if found is None:
        raise ApiError(404, f"Could not find binary {body.binary} on host {body.host}.")
    return json_response({"service": out})


def _changes(body: UpdateBody) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if body.status == "enabled":
        if body.disabled_reason:
            raise bad_request("Specifying 'disabled_reason' with status 'enabled' is invalid.")
        changes.update(disabled=False, disabled_reason=None)
    elif body.status == "disabled":
        changes.update(disabled=True, disabled_reason=body.disabled_reason)
    if body.forced_down is not None:
        changes["forced_down"] = body.forced_down
    if not changes:
        raise bad_request("No updates were requested. Fields 'status' or 'forced_down' should be specified.")
    return changes


async def update_service(request: Request) -> Response:
    """PUT /os-services/{uuid} (2.53+), or PUT /os-services/{action} before it."""
    service_id = request.path_params["service_id"]
    raw = await read_object(request)
    if mv(request) < (2, 53):
        actions = {"enable", "disable", "disable-log-reason"} | ({"force-down"} if mv(request) >= (2, 11) else set())
        if service_id not in actions:
            raise ApiError(404, "Unknown action")
        return await _action(request, service_id, raw)
    if not is_uuid(service_id):
        raise bad_request(f"Invalid uuid {service_id}")
    changes = _changes(validate(UpdateBody, raw))
    row = await cell_db(request).write(_apply, s.uuid == service_id, changes, cloud_of(request).clock.now())
    if row is None:
        raise ApiError(404, f"Service {service_id} could not be found.")
    return json_response({"service": render_service(row, request)})


def _delete(conn: Connection, where: Any) -> str | None:
    """Remove a service; an agent's host goes too when nothing runs on it. The removed host's name, if any."""
    row = conn.execute(select(c.services).where(where)).mappings().first()
    if row is None:
        raise LookupError
    conn.execute(delete(c.services).where(s.id == row["id"]))
    if row["binary"] != AGENT_BINARY:
        return None
    i = c.instances.c
    busy = conn.execute(select(i.id).where(i.host == row["host"], i.deleted.is_(False)).limit(1)).first()
    if busy:
        return None
    removed = conn.execute(delete(c.hosts).where(h.name == row["host"])).rowcount
    return row["host"] if removed else None


def _unmap(conn: Connection, host: str) -> None:
    conn.execute(delete(g.host_mappings).where(g.host_mappings.c.host == host))


async def delete_service(request: Request) -> Response:
    """DELETE /os-services/{id} (a uuid from 2.53, an integer before)."""
    service_id = request.path_params["service_id"]
    if mv(request) >= (2, 53):
        if not is_uuid(service_id):
            raise bad_request(f"Invalid uuid {service_id}")
        where = s.uuid == service_id
    else:
        if not service_id.isdigit():
            raise bad_request("Invalid input received: id must be an integer")
        where = s.id == int(service_id)
    try:
        host = await cell_db(request).write(_delete, where)
    except LookupError:
        raise ApiError(404, f"Service {service_id} not found.") from None
    if host is not None:
        await cloud_of(request).dbs.global_db.write(_unmap, host)
    return empty_response(204)


ROUTES: list[BaseRoute] = [
    route("/v2.1/os-services", list_services, ["GET"], "compute:services"),
    route("/v2.1/os-services/{service_id}", update_service, ["PUT"], "compute:services:update"),
    route("/v2.1/os-services/{service_id}", delete_service, ["DELETE"], "compute:services:delete"),
]
