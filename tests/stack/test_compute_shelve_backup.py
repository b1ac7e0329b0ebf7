"""shelve / shelveOffload / unshelve and createBackup through the whole stack (issue 16). Each failed
before the change: the actions were unknown (400 "There is no such action")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from canopy.db import tables_cell as c
from tests.clouds import V, boot_active, wait_for_server
from tests.waiting import wait_until

V244 = {"OpenStack-API-Version": "compute 2.44"}


async def _act(stack: Any, sid: str, body: Any, user: str = "demo") -> Any:
    return await stack.api.post(f"/compute/v2.1/servers/{sid}/action", json=body, as_user=user, headers=V)


async def _server(stack: Any, sid: str) -> dict[str, Any]:
    return (await stack.api.get(f"/compute/v2.1/servers/{sid}", headers=V)).json()["server"]


def _used_vcpus(stack: Any) -> int:
    with stack.cloud.dbs.default_cell.reader_fresh() as conn:
        return sum(r[0] for r in conn.execute(select(c.hosts.c.vcpus_used)))


def _ports(stack: Any, sid: str) -> list[dict[str, Any]]:
    with stack.cloud.dbs.default_cell.reader_fresh() as conn:
        return [dict(r) for r in conn.execute(select(c.ports).where(c.ports.c.device_id == sid)).mappings()]


async def _image_status(stack: Any, image_id: str) -> int:
    return (await stack.api.get(f"/image/v2/images/{image_id}", as_user="demo")).status_code


async def test_shelve_keeps_the_host_until_offloaded_then_unshelve_starts_in_place(stack: Any) -> None:
    stack.cloud.settings.compute.shelved_offload_time = -1
    sid, driver = await boot_active(stack)
    assert (await _act(stack, sid, {"shelve": None})).status_code == 202
    server = await wait_for_server(stack.api, sid, {"SHELVED"})
    assert server["OS-EXT-STS:vm_state"] == "shelved" and server["OS-EXT-STS:power_state"] == 4
    images = (await stack.api.get("/image/v2/images?name=vm-shelved", as_user="demo")).json()["images"]
    assert [i["status"] for i in images] == ["active"]
    assert server["OS-EXT-SRV-ATTR:host"] == driver.host and sid in driver.guests
    resp = await _act(stack, sid, {"unshelve": None})
    assert resp.status_code == 202, resp.text
    server = await wait_for_server(stack.api, sid, {"ACTIVE"})
    assert server["OS-EXT-SRV-ATTR:host"] == driver.host
    assert await _image_status(stack, images[0]["id"]) == 404  # the shelved image goes once unshelved


async def test_offloaded_server_holds_no_host_but_keeps_its_ports_and_comes_back_from_its_image(stack: Any) -> None:
    sid, driver = await boot_active(stack)
    before = await _server(stack, sid)
    used = _used_vcpus(stack)
    ports = _ports(stack, sid)
    assert (await _act(stack, sid, {"shelve": None})).status_code == 202  # shelved_offload_time 0: at once
    server = await wait_for_server(stack.api, sid, {"SHELVED_OFFLOADED"})
    assert server["OS-EXT-SRV-ATTR:host"] is None and sid not in driver.guests
    assert _used_vcpus(stack) == used - before["flavor"]["vcpus"]
    assert server["addresses"] == before["addresses"]
    kept = _ports(stack, sid)
    assert [p["id"] for p in kept] == [p["id"] for p in ports] and kept[0]["host_id"] == ""
    image = (await stack.api.get("/image/v2/images?name=vm-shelved", as_user="demo")).json()["images"][0]

    assert (await _act(stack, sid, {"unshelve": None})).status_code == 202
    server = await wait_for_server(stack.api, sid, {"ACTIVE"})
    host = server["OS-EXT-SRV-ATTR:host"]
    guest = stack.drivers[host].guests[sid]
    assert guest.spec.image_id == image["id"]
    assert server["addresses"] == before["addresses"] and server["image"]["id"] == before["image"]["id"]
    assert [p["host_id"] for p in _ports(stack, sid)] == [host]
    assert _used_vcpus(stack) == used
    assert await _image_status(stack, image["id"]) == 404


async def test_shelve_offload_is_an_admin_action_on_a_shelved_server(stack: Any) -> None:
    stack.cloud.settings.compute.shelved_offload_time = -1
    sid, _ = await boot_active(stack)
    resp = await _act(stack, sid, {"shelveOffload": None}, user="admin")
    assert resp.status_code == 409 and "vm_state active" in resp.json()["conflictingRequest"]["message"]
    assert (await _act(stack, sid, {"shelve": None})).status_code == 202
    await wait_for_server(stack.api, sid, {"SHELVED"})
    assert (await _act(stack, sid, {"shelveOffload": None})).status_code == 403
    assert (await _act(stack, sid, {"shelveOffload": None}, user="admin")).status_code == 202
    server = await wait_for_server(stack.api, sid, {"SHELVED_OFFLOADED"})
    assert server["OS-EXT-SRV-ATTR:host"] is None


async def test_unshelve_of_an_active_server_is_409_and_a_locked_one_cannot_be_shelved(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    resp = await _act(stack, sid, {"unshelve": None})
    assert resp.status_code == 409
    assert resp.json()["conflictingRequest"]["message"] == \
        f"Cannot 'unshelve' instance {sid} while it is in vm_state active"
    assert (await _act(stack, sid, {"lock": None})).status_code == 202
    assert (await _act(stack, sid, {"shelve": None})).status_code == 409
    assert (await stack.api.get("/image/v2/images?name=vm-shelved", as_user="demo")).json()["images"] == []


async def test_a_shelved_offloaded_server_can_be_deleted(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    assert (await _act(stack, sid, {"shelve": None})).status_code == 202
    await wait_for_server(stack.api, sid, {"SHELVED_OFFLOADED"})
    assert (await stack.api.delete(f"/compute/v2.1/servers/{sid}", as_user="demo")).status_code == 204
    await wait_for_server(stack.api, sid, {"DELETED"})
    assert _ports(stack, sid) == []


async def _backup(stack: Any, sid: str, name: str, kind: str, rotation: Any) -> Any:
    return await _act(stack, sid, {"createBackup": {"name": name, "backup_type": kind, "rotation": rotation}})


async def _backups(stack: Any) -> list[str]:
    images = (await stack.api.get("/image/v2/images?sort=created_at:asc", as_user="demo")).json()["images"]
    return [i["name"] for i in images if i.get("image_type") == "backup"]


async def test_create_backup_keeps_the_newest_rotation_of_each_type(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    for n, kind in ((1, "daily"), (2, "daily"), (3, "weekly"), (4, "daily")):
        resp = await _backup(stack, sid, f"b{n}", kind, 2)
        assert resp.status_code == 202, resp.text
        assert resp.json()["image_id"] and resp.headers["location"].endswith(resp.json()["image_id"])
        await wait_for_server(stack.api, sid, {"ACTIVE"})
        await wait_until(lambda: _task_gone(stack, sid), what="the backup task's end")
    assert await _backups(stack) == ["b2", "b3", "b4"]
    image = (await stack.api.get("/image/v2/images?name=b4", as_user="demo")).json()["images"][0]
    assert (image["backup_type"], image["instance_uuid"], image["status"]) == ("daily", sid, "active")


def _task_gone(stack: Any, sid: str) -> bool:
    with stack.cloud.dbs.default_cell.reader_fresh() as conn:
        return conn.execute(select(c.tasks.c.id).where(c.tasks.c.instance_uuid == sid)).first() is None


async def test_create_backup_before_2_45_answers_no_body(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    resp = await stack.api.post(f"/compute/v2.1/servers/{sid}/action", as_user="demo", headers=V244,
                                json={"createBackup": {"name": "b", "backup_type": "daily", "rotation": "1"}})
    assert resp.status_code == 202 and resp.content == b"" and "/image/v2/images/" in resp.headers["location"]


BAD_BACKUPS = [({"backup_type": "daily", "rotation": 1}, "name"), ({"name": "b", "rotation": 1}, "backup_type"),
               ({"name": "b", "backup_type": "daily"}, "rotation"),
               ({"name": "b", "backup_type": "daily", "rotation": -1}, "rotation"),
               ({"name": "b", "backup_type": "daily", "rotation": "x"}, "rotation"), ("x", "createBackup")]


async def test_bad_create_backup_is_400_and_makes_no_image(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    for body, needle in BAD_BACKUPS:
        resp = await _act(stack, sid, {"createBackup": body})
        assert resp.status_code == 400 and needle in resp.json()["badRequest"]["message"], (body, resp.text)
    assert await _backups(stack) == []
