"""Server actions that keep a server's disk as an image: shelve, shelveOffload, unshelve (Nova's
os-shelve) and createBackup (with rotation). The image record is made here, queued, as createImage
makes it; the conductor's task uploads into it (canopy/conductor/shelve.py, backup.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canopy import states
from canopy.api.compute.common import cell_db, check_unlocked, cloud_of, load_visible_instance
from canopy.api.compute.microversion import mv
from canopy.api.compute.server_actions import start_action
from canopy.api.compute.server_mobility import create_snapshot_image
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, empty_response, json_response, require_admin
from canopy.image import store
from canopy.rpc.tasks import ActionPayload


async def _instance(request: Request, uuid: str) -> dict[str, Any]:
    rc = ctx(request)
    return await cell_db(request).read_fresh(load_visible_instance, uuid, rc.project_id, rc.is_admin)


def _check_state(inst: dict[str, Any], action: str, api_name: str) -> None:
    """409 before an image is made for a server whose state forbids the action."""
    rule = states.ACTIONS[action]
    if inst["vm_state"] not in rule.from_vm_states or inst["task_state"] is not None:
        where = f"task_state {inst['task_state']}" if inst["task_state"] else f"vm_state {inst['vm_state']}"
        raise ApiError(409, f"Cannot '{api_name}' instance {inst['uuid']} while it is in {where}")


async def _start_with_image(request: Request, uuid: str, action: str, image_id: str, payload: ActionPayload) -> None:
    """Start the task; if it cannot start, the queued image goes too (nothing half-written)."""
    try:
        await start_action(request, uuid, action, payload)
    except ApiError:
        await cloud_of(request).dbs.global_db.write(store.delete_image, image_id)
        raise


async def shelve(request: Request, uuid: str, arg: Any) -> None:
    """Stop the server and keep its disk as an image `<name>-shelved`; offloaded at once when the
    deployment's shelved_offload_time is 0."""
    if arg is not None:
        raise bad_request(f"Invalid input for field/attribute shelve. Value: {arg!r}. None is not of type 'null'")
    inst = await _instance(request, uuid)
    _check_state(inst, "shelve", "shelve")
    check_unlocked(inst, ctx(request).is_admin)
    image_id = await create_snapshot_image(request, inst, f"{inst['name']}-shelved", {})
    offload = cloud_of(request).settings.compute.shelved_offload_time == 0
    await _start_with_image(request, uuid, "shelve", image_id, ActionPayload(image_id=image_id, offload=offload))


async def shelve_offload(request: Request, uuid: str, arg: Any) -> None:
    """Free the host of a SHELVED server (admin, as Nova's default policy)."""
    require_admin(request)
    if arg is not None:
        raise bad_request(f"Invalid input for field/attribute shelveOffload. Value: {arg!r}. "
                          "None is not of type 'null'")
    await start_action(request, uuid, "shelve_offload")


async def unshelve(request: Request, uuid: str, arg: Any) -> None:
    """Bring a shelved server back: in place, or (offloaded) scheduled again; 2.77+ may name a zone."""
    zone = None
    if isinstance(arg, dict) and mv(request) >= (2, 77):
        extra = set(arg) - {"availability_zone"}
        zone = arg.get("availability_zone")
        if extra or (zone is not None and (not isinstance(zone, str) or not 1 <= len(zone) <= 255)):
            raise bad_request(f"Invalid input for field/attribute unshelve. Value: {arg!r}. Only "
                              "'availability_zone' (a string of 1-255 characters) is allowed")
    elif arg is not None:
        raise bad_request(f"Invalid input for field/attribute unshelve. Value: {arg!r}. None is not of type 'null'")
    await start_action(request, uuid, "unshelve", ActionPayload(availability_zone=zone))


def _backup_args(arg: Any) -> tuple[str, str, int, dict[str, str]]:
    if not isinstance(arg, dict):
        raise bad_request(f"Invalid input for field/attribute createBackup. Value: {arg!r}. It must be an object.")
    for key in ("name", "backup_type", "rotation"):
        if key not in arg:
            raise bad_request(f"Invalid input for field/attribute createBackup. '{key}' is a required property")
    name, kind, rotation = arg["name"], arg["backup_type"], arg["rotation"]
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 255:
        raise bad_request(f"Invalid input for field/attribute name. Value: {name!r}. It must be a string of 1-255.")
    if not isinstance(kind, str) or not 1 <= len(kind) <= 255:
        raise bad_request(f"Invalid input for field/attribute backup_type. Value: {kind!r}. "
                          "It must be a string of 1-255.")
    if isinstance(rotation, str) and rotation.isdigit():
        rotation = int(rotation)
    if not isinstance(rotation, int) or isinstance(rotation, bool) or rotation < 0:
        raise bad_request(f"Invalid input for field/attribute rotation. Value: {rotation!r}. "
                          "It must be an integer of at least 0.")
    meta = arg.get("metadata") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad_request("Invalid input for field/attribute metadata. It must be an object of strings.")
    return name, kind, rotation, meta


async def create_backup(request: Request, uuid: str, arg: Any) -> Response:
    """An image of type backup; once uploaded, the server keeps only its newest `rotation` of this type."""
    name, kind, rotation, meta = _backup_args(arg)
    inst = await _instance(request, uuid)
    _check_state(inst, "backup", "createBackup")
    image_id = await create_snapshot_image(request, inst, name, meta,
                                           {"image_type": "backup", "backup_type": kind})
    await _start_with_image(request, uuid, "backup", image_id,
                            ActionPayload(image_id=image_id, backup_type=kind, rotation=rotation))
    headers = {"Location": f"{str(request.base_url).rstrip('/')}/image/v2/images/{image_id}"} if rotation else {}
    if mv(request) >= (2, 45):
        return json_response({"image_id": image_id}, status=202, headers=headers)
    return empty_response(202, headers=headers)


ACTIONS = {
    "shelve": shelve,
    "shelveOffload": shelve_offload,
    "unshelve": unshelve,
    "createBackup": create_backup,
}
