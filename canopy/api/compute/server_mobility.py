"""Server actions that change where or from what a server runs (Nova's shapes): resize, confirmResize,
revertResize, migrate, os-migrateLive, evacuate, createImage, rebuild, rescue, unrescue; and the
migrations a server went through: GET /os-migrations, GET/DELETE /servers/{id}/migrations[/{id}]."""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from typing import Any

from sqlalchemy import Connection, desc, select, update
from starlette.requests import Request
from starlette.responses import Response

from canopy import states
from canopy.api.compute import field_limits, server_actions
from canopy.api.compute.common import admin_password, cell_db, cloud_of, load_visible_instance, password_body
from canopy.api.compute.microversion import mv
from canopy.api.compute.os_services import is_up
from canopy.api.compute.server_actions import start_action
from canopy.api.compute.server_create import _image_ref, find_flavor, flavor_snapshot
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, empty_response, json_response, require_admin, route
from canopy.clock import isotime_us
from canopy.db import tables_cell as c
from canopy.image import store
from canopy.rpc.base import BusError, Target
from canopy.rpc.calls_relay import RELAY_TIMEOUT_S, AbortLiveMigration, relay_failure
from canopy.rpc.tasks import ActionPayload

server_actions.API_NAMES.update({a: n for a, n in states.ACTION_NAMES.items() if a in states.MOBILITY_KINDS})
m = c.migrations.c


def _obj(arg: Any, action: str) -> dict[str, Any]:
    if arg is None:
        return {}
    if not isinstance(arg, dict):
        raise bad_request(f"Invalid input for field/attribute {action}. Value: {arg!r}. It must be an object.")
    return arg


def _host_arg(body: dict[str, Any], action: str) -> str | None:
    host = body.get("host")
    if host is not None and (not isinstance(host, str) or not 1 <= len(host) <= 255):
        raise bad_request(f"Invalid input for field/attribute host in {action}. It must be a string of 1-255.")
    return host


async def _instance(request: Request, uuid: str) -> dict[str, Any]:
    rc = ctx(request)
    return await cell_db(request).read_fresh(load_visible_instance, uuid, rc.project_id, rc.is_admin)


async def _resize(request: Request, uuid: str, arg: Any) -> None:
    body = _obj(arg, "resize")
    ref = body.get("flavorRef")
    if not isinstance(ref, (str, int)) or isinstance(ref, bool) or not str(ref):
        raise bad_request("Invalid input for field/attribute flavorRef. Value: None. 'flavorRef' is a required "
                          "property" if ref is None else f"Invalid input for field/attribute flavorRef: {ref!r}")
    flavor = flavor_snapshot(await find_flavor(cloud_of(request), str(ref), ctx(request),
                                               "Unable to locate requested flavor {id}."))
    inst = await _instance(request, uuid)
    old = inst["flavor"]
    if flavor.id == old["id"]:
        raise bad_request("When resizing, instances must change flavor!")
    if flavor.disk_gb < old["disk"]:
        raise bad_request(f"Resize to a flavor with a smaller disk ({flavor.disk_gb} GB < {old['disk']} GB) "
                          "is not allowed: disks only grow.")
    await start_action(request, uuid, "resize", ActionPayload(flavor=flavor))


async def _migrate(request: Request, uuid: str, arg: Any) -> None:
    require_admin(request)
    body = _obj(arg, "migrate")
    host = _host_arg(body, "migrate") if mv(request) >= (2, 56) else None
    await _check_target(request, uuid, host)
    await start_action(request, uuid, "migrate", ActionPayload(host=host))


async def _live(request: Request, uuid: str, arg: Any) -> None:
    require_admin(request)
    body = _obj(arg, "os-migrateLive")
    if "host" not in body:
        raise bad_request("Invalid input for field/attribute os-migrateLive. 'host' is a required property")
    host = _host_arg(body, "os-migrateLive")
    await _check_target(request, uuid, host)
    await start_action(request, uuid, "live_migrate", ActionPayload(host=host))


async def _check_target(request: Request, uuid: str, host: str | None) -> None:
    inst = await _instance(request, uuid)
    if host and host == inst["host"]:
        raise bad_request(f"The target host {host} is the server's own host.")
    if host and await cell_db(request).read(_service_row, host) is None:
        raise ApiError(404, f"Compute host {host} could not be found.")


def _service_row(conn: Connection, host: str) -> dict[str, Any] | None:
    s = c.services.c
    row = conn.execute(select(c.services).where(s.host == host, s.binary == "canopy-agent")).mappings().first()
    return dict(row) if row else None


async def _evacuate(request: Request, uuid: str, arg: Any) -> Response:
    require_admin(request)
    body = _obj(arg, "evacuate")
    host = _host_arg(body, "evacuate")
    inst = await _instance(request, uuid)
    service = await cell_db(request).read_fresh(_service_row, inst["host"]) if inst["host"] else None
    cloud = cloud_of(request)
    if service is not None and is_up(service, cloud.clock.now(), cloud.settings.scheduler.service_down_s):
        raise ApiError(409, f"Cannot 'evacuate' instance {uuid}: compute service {inst['host']} is still in use "
                            "(it is up).")
    await _check_target(request, uuid, host)
    await start_action(request, uuid, "evacuate", ActionPayload(host=host))
    if mv(request) < (2, 14):
        return json_response(password_body(request, admin_password(request, body.get("adminPass"))))
    return empty_response(200)


async def _confirm(request: Request, uuid: str, arg: Any) -> Response:
    await start_action(request, uuid, "confirm_resize")
    return empty_response(204)


async def _revert(request: Request, uuid: str, arg: Any) -> None:
    await start_action(request, uuid, "revert_resize")


def _check_rebuild_fields(body: dict[str, Any]) -> None:
    """The limits of what a rebuild may also carry (metadata, personality, access addresses, user data)."""
    if body.get("metadata") is not None:
        field_limits.check_metadata(body["metadata"])
    if body.get("personality") is not None:
        field_limits.check_personality(body["personality"])
    if "description" in body:
        field_limits.check_description(body["description"])
    for version in (4, 6):
        field_limits.check_access_ip(body.get(f"accessIPv{version}"), version)
    user_data = body.get("user_data")
    if user_data is not None and (not isinstance(user_data, str) or len(user_data) > 65535):
        raise bad_request("Invalid input for field/attribute user_data. It must be base64 text of at most "
                          "65535 characters.")


async def _rebuild(request: Request, uuid: str, arg: Any) -> Response:
    body = _obj(arg, "rebuild")
    if not isinstance(body.get("imageRef"), str):
        raise bad_request("Invalid input for field/attribute imageRef. 'imageRef' is a required property")
    name = body.get("name")
    if name is not None:
        field_limits.check_name(name)
    _check_rebuild_fields(body)
    given = body.get("adminPass")
    if given is not None and not isinstance(given, str):
        raise bad_request("Invalid input for field/attribute adminPass. It must be a string.")
    image_id = await _usable_image(request, body["imageRef"])
    password = admin_password(request, given)
    await start_action(request, uuid, "rebuild", ActionPayload(image_id=image_id, name=name or None,
                                                               admin_pass=password))
    from canopy.api.compute.servers import show_server_body

    shown = await show_server_body(request, uuid)
    shown["server"].update(password_body(request, password))
    return json_response(shown, status=202)


async def _usable_image(request: Request, ref: str) -> str:
    image_id = _image_ref(ref)
    rc = ctx(request)
    image = await cloud_of(request).dbs.global_db.read(store.get_visible_image, image_id, rc.project_id,
                                                        rc.is_admin)
    if image is None:
        raise bad_request(f"Image {image_id} could not be found.")
    if image["status"] != "active":
        raise ApiError(409, f"Image {image_id} is not active (it is {image['status']}).")
    return image_id


async def _rescue(request: Request, uuid: str, arg: Any) -> Response:
    body = _obj(arg, "rescue")
    given = body.get("adminPass")
    if given is not None and not isinstance(given, str):
        raise bad_request("Invalid input for field/attribute adminPass. It must be a string.")
    password = admin_password(request, given)
    image = None
    if body.get("rescue_image_ref") is not None:
        image = await _usable_image(request, str(body["rescue_image_ref"]))
    await start_action(request, uuid, "rescue", ActionPayload(rescue_image_ref=image, admin_pass=password))
    return json_response(password_body(request, password))


async def _unrescue(request: Request, uuid: str, arg: Any) -> None:
    await start_action(request, uuid, "unrescue")


async def _create_image(request: Request, uuid: str, arg: Any) -> Response:
    """A queued image owned by the server's project, with the base image's boot properties, then the task."""
    body = _obj(arg, "createImage")
    name = field_limits.check_name(body.get("name"))
    meta = field_limits.check_metadata(body.get("metadata") or {})
    inst = await _instance(request, uuid)
    rule = states.ACTIONS["snapshot"]
    if inst["vm_state"] not in rule.from_vm_states or inst["task_state"] is not None:
        where = f"task_state {inst['task_state']}" if inst["task_state"] else f"vm_state {inst['vm_state']}"
        raise ApiError(409, f"Cannot 'createImage' instance {uuid} while it is in {where}")
    image_id = await create_snapshot_image(request, inst, name, meta)
    try:
        await start_action(request, uuid, "snapshot", ActionPayload(image_id=image_id))
    except ApiError:
        await cloud_of(request).dbs.global_db.write(store.delete_image, image_id)  # nothing half-written
        raise
    location = f"{str(request.base_url).rstrip('/')}/image/v2/images/{image_id}"
    if mv(request) >= (2, 45):
        return json_response({"image_id": image_id}, status=202, headers={"Location": location})
    return empty_response(202, headers={"Location": location})


async def create_snapshot_image(request: Request, inst: dict[str, Any], name: str, meta: dict[str, str],
                                own: dict[str, Any] | None = None) -> str:
    """A queued image owned by the server's project, with the base image's boot properties (what the
    agent uploads a createImage, createBackup or shelve into); its id."""
    cloud = cloud_of(request)
    base = await cloud.dbs.global_db.read(store.get_image, inst["image_ref"]) or {}
    props = {k: v for k, v in (base.get("properties") or {}).items()
             if k in ("kernel_id", "ramdisk_id", "os_command_line") or k.startswith("hw_")}
    now = cloud.clock.now()
    image_id = str(uuidlib.uuid4())
    record = {"id": image_id, "name": name, "owner": inst["project_id"], "visibility": "private", "status": "queued",
              "container_format": None, "disk_format": None, "size": None, "checksum": None, "os_hash_algo": None,
              "os_hash_value": None, "min_disk": inst["flavor"]["disk"], "min_ram": 0, "protected": False, "tags": [],
              "properties": {**props, **meta, "image_type": "snapshot", "instance_uuid": inst["uuid"],
                             "base_image_ref": inst["image_ref"], **(own or {})},
              "created_at": now, "updated_at": now}
    await cloud.dbs.global_db.write(store.create_image, record)
    return image_id


ACTIONS = {
    "resize": _resize,
    "confirmResize": _confirm,
    "revertResize": _revert,
    "migrate": _migrate,
    "os-migrateLive": _live,
    "evacuate": _evacuate,
    "rebuild": _rebuild,
    "rescue": _rescue,
    "unrescue": _unrescue,
    "createImage": _create_image,
}

# -- migrations ------------------------------------------------------------------------------------


def _render(row: dict[str, Any], version: tuple[int, int], request: Request) -> dict[str, Any]:
    """os-migrations' shape."""
    out: dict[str, Any] = {
        "id": row["id"], "status": row["status"], "instance_uuid": row["instance_uuid"],
        "source_compute": row["source_compute"], "dest_compute": row["dest_compute"],
        "source_node": row["source_compute"], "dest_node": row["dest_compute"], "dest_host": None,
        "source_region": "RegionOne", "dest_region": "RegionOne",
        "old_instance_type_id": row["old_flavor"].get("id"), "new_instance_type_id": row["new_flavor"].get("id"),
        "created_at": isotime_us(row["created_at"]), "updated_at": isotime_us(row["updated_at"])}
    if version >= (2, 23):
        out["migration_type"] = row["migration_type"]
    if version >= (2, 59):
        out["uuid"] = row["uuid"]
    if version >= (2, 80):
        out["user_id"], out["project_id"] = row["user_id"], row["project_id"]
    return out


def _render_server_migration(row: dict[str, Any], version: tuple[int, int]) -> dict[str, Any]:
    """/servers/{id}/migrations' shape: a live migration with its progress in bytes."""
    out: dict[str, Any] = {
        "id": row["id"], "server_uuid": row["instance_uuid"], "status": row["status"],
        "source_compute": row["source_compute"], "dest_compute": row["dest_compute"],
        "source_node": row["source_compute"], "dest_node": row["dest_compute"], "dest_host": None,
        "created_at": isotime_us(row["created_at"]), "updated_at": isotime_us(row["updated_at"])}
    for key in ("memory_total", "memory_processed", "memory_remaining", "disk_total", "disk_processed",
                "disk_remaining"):
        out[f"{key}_bytes"] = row[key]
    if version >= (2, 59):
        out["uuid"] = row["uuid"]
    if version >= (2, 80):
        out["user_id"], out["project_id"] = row["user_id"], row["project_id"]
    return out


def _list_migrations(conn: Connection, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    q = select(c.migrations).order_by(desc(m.created_at), desc(m.id)).limit(limit)
    for key, column in (("instance_uuid", m.instance_uuid), ("status", m.status),
                        ("migration_type", m.migration_type), ("source_compute", m.source_compute),
                        ("user_id", m.user_id), ("project_id", m.project_id)):
        if key in filters:
            q = q.where(column == filters[key])
    if "host" in filters:
        q = q.where((m.source_compute == filters["host"]) | (m.dest_compute == filters["host"]))
    if "changes-since" in filters:
        q = q.where(m.updated_at >= filters["changes-since"])
    return [dict(r) for r in conn.execute(q).mappings()]


async def list_migrations(request: Request) -> Response:
    """GET /os-migrations (admin): newest first, filtered by instance_uuid, status, host, migration_type."""
    qp = request.query_params
    filters: dict[str, Any] = {k: qp[k] for k in ("instance_uuid", "status", "host", "migration_type", "source_compute",
                                  "user_id", "project_id") if k in qp}
    if "changes-since" in qp:
        try:
            filters["changes-since"] = dt.datetime.fromisoformat(qp["changes-since"].replace("Z", "+00:00")) \
                .replace(tzinfo=None)
        except ValueError:
            raise bad_request(f"Invalid input for query parameters changes-since. Value: {qp['changes-since']}") \
                from None
    limit = qp.get("limit", "1000")
    if not limit.isdigit():
        raise bad_request(f"Invalid input for query parameters limit. Value: {limit}.")
    rows = await cell_db(request).read(_list_migrations, filters, min(int(limit), 1000))
    return json_response({"migrations": [_render(r, mv(request), request) for r in rows]})


IN_PROGRESS = ("queued", "preparing", "running", "cancelling")


def _server_migrations(conn: Connection, uuid: str, mid: int | None) -> list[dict[str, Any]]:
    q = select(c.migrations).where(m.instance_uuid == uuid, m.migration_type == "live-migration",
                                   m.status.in_(IN_PROGRESS)).order_by(m.id)
    if mid is not None:
        q = q.where(m.id == mid)
    return [dict(r) for r in conn.execute(q).mappings()]


def _mid(request: Request) -> int:
    raw = request.path_params["migration_id"]
    if not raw.isdigit():
        raise bad_request(f"Invalid migration id {raw!r}: it must be an integer.")
    return int(raw)


async def server_migrations(request: Request) -> Response:
    """GET /servers/{id}/migrations (2.23+, admin): its live migrations in progress."""
    uuid = request.path_params["server_id"]
    await _instance(request, uuid)
    rows = await cell_db(request).read_fresh(_server_migrations, uuid, None)
    return json_response({"migrations": [_render_server_migration(r, mv(request)) for r in rows]})


async def server_migration(request: Request) -> Response:
    uuid, mid = request.path_params["server_id"], _mid(request)
    await _instance(request, uuid)
    rows = await cell_db(request).read_fresh(_server_migrations, uuid, mid)
    if not rows:
        raise ApiError(404, f"In-progress live migration {mid} is not found for server {uuid}.")
    return json_response({"migration": _render_server_migration(rows[0], mv(request))})


async def abort_migration(request: Request) -> Response:
    """DELETE /servers/{id}/migrations/{mid} (2.24+): abort a running live migration."""
    uuid, mid = request.path_params["server_id"], _mid(request)
    inst = await _instance(request, uuid)
    cloud = cloud_of(request)

    def mark(conn: Connection) -> dict[str, Any] | None:
        row = conn.execute(select(c.migrations).where(m.id == mid, m.instance_uuid == uuid)).mappings().first()
        if row is None:
            return None
        if row["migration_type"] != "live-migration" or row["status"] not in ("queued", "preparing", "running"):
            raise bad_request(f"Migration {mid} state of instance {uuid} is {row['status']}. Cannot abort "
                              "live migration that is not in queued, preparing or running state.")
        conn.execute(update(c.migrations).where(m.id == mid).values(status="cancelling",
                                                                     updated_at=cloud.clock.now()))
        return dict(row)

    row = await cell_db(request).write(mark)
    if row is None:
        raise ApiError(404, f"Migration {mid} for server {uuid} could not be found.")
    try:
        await cloud.bus.call(Target("conductor"), AbortLiveMigration(host=inst["host"], instance_uuid=uuid),
                             timeout=RELAY_TIMEOUT_S)
    except BusError as exc:
        raise ApiError(409, f"The live migration of {uuid} could not be aborted: "
                            f"{relay_failure(exc, inst['host'], with_kind=True)}") from None
    return empty_response(202)


ROUTES = [
    route("/v2.1/os-migrations", list_migrations, ["GET"], "compute:migrations:index"),
    route("/v2.1/servers/{server_id}/migrations", server_migrations, ["GET"], "compute:server_migrations:index"),
    route("/v2.1/servers/{server_id}/migrations/{migration_id}", server_migration, ["GET"],
          "compute:server_migrations:show"),
    route("/v2.1/servers/{server_id}/migrations/{migration_id}", abort_migration, ["DELETE"],
          "compute:server_migrations:delete"),
]
