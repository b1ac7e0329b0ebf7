"""Resize (confirm, revert), cold migration, snapshot, rebuild, rescue, evacuation and live migration
(progress, abort) through the Compute API on the in-process stack with simulated hypervisors: the task
flows, claims, ports and migration records (the real-guest tests are in test_mobility_real.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from canopy.agent.disk.imageclient import ImageApiClient
from canopy.agent.disk.upload import ImageUploader
from tests.clouds import boot_active as boot
from tests.clouds import wait_for_server

V = {"OpenStack-API-Version": "compute 2.87"}


async def act(stack: Any, sid: str, body: dict[str, Any], user: str = "demo") -> httpx.Response:
    return await stack.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, as_user=user, json=body)


async def server(stack: Any, sid: str) -> dict[str, Any]:
    return dict((await stack.api.get(f"/compute/v2.1/servers/{sid}", headers=V)).json()["server"])


async def wait(stack: Any, sid: str, statuses: set[str], **kw: Any) -> dict[str, Any]:
    await wait_for_server(stack.api, sid, statuses, **kw)
    return await server(stack, sid)


async def hosts(stack: Any) -> dict[str, dict[str, Any]]:
    rows = (await stack.api.get("/compute/v2.1/os-hypervisors/detail", headers=V)).json()["hypervisors"]
    return {r["hypervisor_hostname"]: r for r in rows}


async def bigger_flavor(stack: Any) -> str:
    resp = await stack.api.post("/compute/v2.1/flavors", headers=V, json={"flavor": {
        "name": f"big-{len(await hosts(stack))}-{id(stack)}", "vcpus": 4, "ram": 4096, "disk": 40}})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["flavor"]["id"])


async def test_resize_confirm_moves_claims_and_grows_the_disk(stack: Any) -> None:
    sid, src = await boot(stack, "rz")
    old = await server(stack, sid)
    flavor = await bigger_flavor(stack)
    resp = await act(stack, sid, {"resize": {"flavorRef": flavor}})
    assert resp.status_code == 202, resp.text
    s = await wait(stack, sid, {"VERIFY_RESIZE", "ERROR"})
    assert s["status"] == "VERIFY_RESIZE", s
    assert s["flavor"]["vcpus"] == 4 and s["flavor"]["disk"] == 40
    dest = stack.drivers[s["OS-EXT-SRV-ATTR:host"]]
    assert b"grown to 40 GB" in dest.mobility.disks[sid]
    assert sid in src.mobility.aside  # the old guest is kept until confirmed
    migs = (await stack.api.get(f"/compute/v2.1/os-migrations?instance_uuid={sid}", headers=V)).json()["migrations"]
    assert [(m["migration_type"], m["status"]) for m in migs] == [("resize", "finished")]
    resp = await act(stack, sid, {"confirmResize": None})
    assert resp.status_code == 204, resp.text
    s = await wait(stack, sid, {"ACTIVE"})
    assert s["OS-EXT-STS:task_state"] is None and sid not in src.mobility.aside
    migs = (await stack.api.get(f"/compute/v2.1/os-migrations?instance_uuid={sid}", headers=V)).json()["migrations"]
    assert migs[0]["status"] == "confirmed"
    hv = await hosts(stack)
    used = sum(h["vcpus_used"] for h in hv.values())
    assert used >= 4 and old["flavor"]["vcpus"] <= 4


async def test_resize_revert_restores_old_flavor_and_disk(stack: Any) -> None:
    sid, src = await boot(stack, "rv")
    old = await server(stack, sid)
    disk = src.mobility.disk_of(sid)
    await act(stack, sid, {"resize": {"flavorRef": await bigger_flavor(stack)}})
    await wait(stack, sid, {"VERIFY_RESIZE"})
    resp = await act(stack, sid, {"revertResize": None})
    assert resp.status_code == 202, resp.text
    s = await wait(stack, sid, {"ACTIVE", "ERROR"})
    assert s["status"] == "ACTIVE", s
    assert s["flavor"] == old["flavor"] and s["OS-EXT-SRV-ATTR:host"] == old["OS-EXT-SRV-ATTR:host"]
    assert src.mobility.disks[sid] == disk and src.guests[sid].power == 1


async def test_resize_bad_input(stack: Any) -> None:
    sid, _ = await boot(stack, "bad")
    flavor = (await server(stack, sid))["flavor"]
    r = await act(stack, sid, {"resize": {}})
    assert r.status_code == 400 and "flavorRef" in r.text
    r = await act(stack, sid, {"resize": {"flavorRef": "no-such"}})
    assert r.status_code == 400 and "no-such" in r.text
    r = await act(stack, sid, {"confirmResize": None})
    assert r.status_code == 409 and "vm_state active" in r.text
    small = await stack.api.post("/compute/v2.1/flavors", headers=V, json={"flavor": {
        "name": "nodisk", "vcpus": 1, "ram": 64, "disk": 0}})
    if flavor["disk"] > 0:
        r = await act(stack, sid, {"resize": {"flavorRef": small.json()["flavor"]["id"]}})
        assert r.status_code == 400 and "smaller disk" in r.text
    assert (await server(stack, sid))["OS-EXT-STS:task_state"] is None


async def test_cold_migration_to_a_named_host_and_revert(stack: Any) -> None:
    sid, src = await boot(stack, "cm")
    source = (await server(stack, sid))["OS-EXT-SRV-ATTR:host"]
    other = next(h for h in stack.drivers if h != source)
    r = await act(stack, sid, {"migrate": {"host": other}}, user="admin")
    assert r.status_code == 202, r.text
    s = await wait(stack, sid, {"VERIFY_RESIZE", "ERROR"})
    assert s["status"] == "VERIFY_RESIZE" and s["OS-EXT-SRV-ATTR:host"] == other, s
    # copied by the agents, chunk by chunk
    assert stack.drivers[other].mobility.disks[sid] == src.mobility.aside[sid].disk
    await act(stack, sid, {"confirmResize": None})
    await wait(stack, sid, {"ACTIVE"})
    assert sid not in src.guests and sid in stack.drivers[other].guests
    r = await act(stack, sid, {"migrate": None})
    assert r.status_code == 403  # admin only


async def test_snapshot_uploads_an_image_that_boots(stack: Any) -> None:
    sid, drv = await boot(stack, "snap")
    for agent in stack.agents:
        agent.image_uploader = ImageUploader(ImageApiClient(
            "http://canopy", "admin", "admin", project="admin",
            transport=httpx.ASGITransport(stack.api.app)))
    r = await act(stack, sid, {"createImage": {"name": "snap-1", "metadata": {"purpose": "test"}}})
    assert r.status_code == 202, r.text
    image_id = r.json()["image_id"]
    assert r.headers["location"].endswith(image_id)
    for _ in range(100):
        img = (await stack.api.get(f"/image/v2/images/{image_id}")).json()
        if img["status"] == "active":
            break
        await asyncio.sleep(0.05)
    assert img["status"] == "active" and img["image_type"] == "snapshot" and img["purpose"] == "test"
    data = (await stack.api.get(f"/image/v2/images/{image_id}/file")).content
    assert data == drv.mobility.disk_of(sid)
    await wait(stack, sid, {"ACTIVE"})
    resp = await stack.api.post("/compute/v2.1/servers", headers=V, as_user="demo", json={"server": {
        "name": "from-snap", "imageRef": image_id, "flavorRef":
        (await stack.api.get("/compute/v2.1/flavors", headers=V)).json()["flavors"][0]["id"],
        "networks": "auto"}})
    assert resp.status_code == 202, resp.text
    await wait_for_server(stack.api, resp.json()["server"]["id"], {"ACTIVE"}, as_user="demo")


async def test_rebuild_keeps_ports_and_addresses(stack: Any) -> None:
    sid, drv = await boot(stack, "rb")
    before = await server(stack, sid)
    image = before["image"]["id"]
    r = await act(stack, sid, {"rebuild": {"imageRef": image, "name": "rb2"}})
    assert r.status_code == 202, r.text
    s = await wait(stack, sid, {"ACTIVE", "ERROR"})
    assert s["status"] == "ACTIVE" and s["name"] == "rb2"
    assert s["addresses"] == before["addresses"]
    assert drv.guests[sid].boots == 2
    r = await act(stack, sid, {"rebuild": {"imageRef": "00000000-0000-0000-0000-000000000000"}})
    assert r.status_code == 400 and "could not be found" in r.text


async def test_rescue_and_unrescue(stack: Any) -> None:
    sid, drv = await boot(stack, "rs")
    r = await act(stack, sid, {"rescue": None})
    assert r.status_code == 200 and "adminPass" in r.json()
    await wait(stack, sid, {"RESCUE"})
    assert "second disk" in drv.guests[sid].console[-1]
    r = await act(stack, sid, {"rescue": None})
    assert r.status_code == 409
    await act(stack, sid, {"unrescue": None})
    await wait(stack, sid, {"ACTIVE"})


async def test_evacuate_off_a_stopped_agent(stack: Any) -> None:
    sid, drv = await boot(stack, "ev")
    before = await server(stack, sid)
    source = before["OS-EXT-SRV-ATTR:host"]
    r = await act(stack, sid, {"evacuate": {}}, user="admin")
    assert r.status_code == 409 and "is up" in r.text
    r = await stack.api.put("/compute/v2.1/os-services/force-down", headers={"OpenStack-API-Version": "compute 2.11"},
                            json={"host": source, "binary": "canopy-agent", "forced_down": True})
    if r.status_code == 404:  # newer shape: by service id
        svc = [s for s in (await stack.api.get("/compute/v2.1/os-services", headers=V)).json()["services"]
               if s["host"] == source][0]
        r = await stack.api.put(f"/compute/v2.1/os-services/{svc['id']}", headers=V, json={"forced_down": True})
    assert r.status_code == 200, r.text
    r = await act(stack, sid, {"evacuate": {}}, user="admin")
    assert r.status_code == 200, r.text
    s = await wait(stack, sid, {"ACTIVE", "ERROR"})
    assert s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] != source, s
    assert s["addresses"] == before["addresses"]
    assert sid in stack.drivers[s["OS-EXT-SRV-ATTR:host"]].guests


async def test_live_migration_progress_and_abort(stack: Any) -> None:
    sid, src = await boot(stack, "lm")
    source = (await server(stack, sid))["OS-EXT-SRV-ATTR:host"]
    for d in stack.drivers.values():
        d.op_delay_s = 0.2
        d.mobility.live_steps = 10
    stack.settings.mobility.progress_poll_s = 0.1
    try:
        r = await act(stack, sid, {"os-migrateLive": {"host": None, "block_migration": "auto"}}, user="admin")
        assert r.status_code == 202, r.text
        s = await wait(stack, sid, {"MIGRATING"})
        migs: list[Any] = []
        for _ in range(50):
            migs = (await stack.api.get(f"/compute/v2.1/servers/{sid}/migrations", headers=V)).json()["migrations"]
            if migs and migs[0]["memory_processed_bytes"]:
                break
            await asyncio.sleep(0.1)
        assert migs and migs[0]["status"] == "running" and migs[0]["memory_total_bytes"] == 10
        r = await stack.api.delete(f"/compute/v2.1/servers/{sid}/migrations/{migs[0]['id']}", headers=V)
        assert r.status_code == 202, r.text
        s = await wait(stack, sid, {"ACTIVE"})
        assert s["OS-EXT-SRV-ATTR:host"] == source and s["OS-EXT-STS:task_state"] is None
        all_migs = (await stack.api.get(f"/compute/v2.1/os-migrations?instance_uuid={sid}",
                                        headers=V)).json()["migrations"]
        assert all_migs[0]["status"] == "cancelled"
        for d in stack.drivers.values():
            d.mobility.live_steps = 2
        r = await act(stack, sid, {"os-migrateLive": {"host": None}}, user="admin")
        s = await wait(stack, sid, {"ACTIVE"}, timeout=20)
        for _ in range(50):
            s = await server(stack, sid)
            if s["OS-EXT-SRV-ATTR:host"] != source:
                break
            await asyncio.sleep(0.1)
        assert s["OS-EXT-SRV-ATTR:host"] != source and sid not in src.guests
        assert "migrated live" in stack.drivers[s["OS-EXT-SRV-ATTR:host"]].guests[sid].console[-1]
    finally:
        for d in stack.drivers.values():
            d.op_delay_s = 0.0


async def test_bad_migration_requests_are_refused_and_change_nothing(stack: Any) -> None:
    sid, _ = await boot(stack, "bad-mig")
    source = (await server(stack, sid))["OS-EXT-SRV-ATTR:host"]
    before = {h: (r["vcpus_used"], r["memory_mb_used"]) for h, r in (await hosts(stack)).items()}
    r = await act(stack, sid, {"os-migrateLive": {"block_migration": "auto"}}, user="admin")
    assert r.status_code == 400 and "'host' is a required property" in r.text
    r = await act(stack, sid, {"os-migrateLive": {"host": source, "block_migration": "auto"}}, user="admin")
    assert r.status_code == 400 and "own host" in r.text
    r = await act(stack, sid, {"os-migrateLive": {"host": "hv-nowhere", "block_migration": "auto"}}, user="admin")
    assert r.status_code == 404 and "hv-nowhere" in r.text
    r = await act(stack, sid, {"os-migrateLive": {"host": None}})
    assert r.status_code == 403
    r = await act(stack, sid, {"migrate": {"host": "hv-nowhere"}}, user="admin")
    assert r.status_code == 404
    s = await server(stack, sid)
    assert s["status"] == "ACTIVE" and s["OS-EXT-STS:task_state"] is None and s["OS-EXT-SRV-ATTR:host"] == source
    migs = (await stack.api.get(f"/compute/v2.1/os-migrations?instance_uuid={sid}", headers=V)).json()["migrations"]
    assert migs == []
    assert {h: (r["vcpus_used"], r["memory_mb_used"]) for h, r in (await hosts(stack)).items()} == before


async def test_live_migration_to_a_full_host_fails_without_leaving_a_claim(stack: Any) -> None:
    sid, src = await boot(stack, "full-target")
    source = (await server(stack, sid))["OS-EXT-SRV-ATTR:host"]
    target = next(h for h in stack.drivers if h != source)
    before = {h: (r["vcpus_used"], r["memory_mb_used"]) for h, r in (await hosts(stack)).items()}
    stack.drivers[target].fail_on("prepare_incoming", "no room for the incoming guest's disk")
    r = await act(stack, sid, {"os-migrateLive": {"host": target, "block_migration": "auto"}}, user="admin")
    assert r.status_code == 202, r.text
    for _ in range(100):
        s = await server(stack, sid)
        if s["status"] == "ACTIVE" and s["OS-EXT-STS:task_state"] is None and s.get("fault"):
            break
        await asyncio.sleep(0.05)
    assert s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] == source, s
    assert "no room for the incoming guest's disk" in s["fault"]["message"]
    assert sid in src.guests and sid not in stack.drivers[target].guests
    migs = (await stack.api.get(f"/compute/v2.1/os-migrations?instance_uuid={sid}", headers=V)).json()["migrations"]
    assert [(m["migration_type"], m["status"]) for m in migs] == [("live-migration", "error")]
    assert {h: (r["vcpus_used"], r["memory_mb_used"]) for h, r in (await hosts(stack)).items()} == before
