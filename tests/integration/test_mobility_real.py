# ruff: noqa: F811  (the shared fixture `real` is imported, then named as a test parameter)
"""Resize (in place) and revert, snapshot, rebuild and rescue of a real tiny guest on qemu:///system,
through the Compute API. Reuses the real-guest fixture of test_real_guest (libvirtd, the guest image);
skipped with the reason where libvirt/QEMU are missing."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from typing import Any

from tests.clouds import wait_for_server
from tests.integration.test_real_guest import RealCloud, act, boot, real, show, wait_console  # noqa: F401

V = {"OpenStack-API-Version": "compute 2.87"}


def virtual_size(real: RealCloud, sid: str) -> int:
    disk = real.settings.libvirt.instances_path / sid / "disk"
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)], capture_output=True, text=True,
                         check=True).stdout
    return int(json.loads(out)["virtual-size"])


async def wait(real: RealCloud, sid: str, statuses: set[str]) -> dict[str, Any]:
    await wait_for_server(real.api, sid, statuses | {"ERROR"}, timeout=180)
    s = await show(real, sid)
    assert s["status"] in statuses, s
    return s


async def test_resize_grows_the_disk_and_revert_restores_it(real: RealCloud) -> None:
    sid = await boot(real, "tiny", "resize-1")
    await wait_console(real, sid, "CANOPY-BOOTED")
    before = virtual_size(real, sid)
    resp = await real.api.post("/compute/v2.1/flavors", headers=V, json={"flavor": {
        "name": "tiny.real.2", "vcpus": 2, "ram": 320, "disk": 2}})
    assert resp.status_code == 200, resp.text
    await act(real, sid, {"resize": {"flavorRef": resp.json()["flavor"]["id"]}})
    s = await wait(real, sid, {"VERIFY_RESIZE"})
    assert s["flavor"]["vcpus"] == 2 and virtual_size(real, sid) == 2 << 30 > before
    out = await wait_console(real, sid, "CANOPY-ROOTFS=canopy tiny guest disk")  # the disk keeps its data
    assert f"CANOPY-DISK-BYTES={2 << 30}" in out  # and the guest sees it grown
    xml = (await asyncio.to_thread(_domain_xml, sid))
    assert "<vcpu placement='static'>2</vcpu>" in xml or ">2</vcpu>" in xml
    await act(real, sid, {"revertResize": None})
    s = await wait(real, sid, {"ACTIVE"})
    assert s["flavor"]["vcpus"] == 1 and virtual_size(real, sid) == before
    out = await wait_console(real, sid, "CANOPY-BOOTED")  # the reverted guest's own boot (a new log)
    assert re.findall(r"CANOPY-DISK-BYTES=(\d+)", out)[-1] == str(before)
    await delete(real, sid)


def fs_bytes(out: str) -> int:
    """The last size of its root filesystem the guest printed."""
    return int(re.findall(r"CANOPY-FS-BYTES=(\d+)", out)[-1])


async def test_host_grows_the_filesystem_of_a_marked_image(real: RealCloud) -> None:
    """`canopy_grow_fs=host`: the agent grows the guest's ext4 to the disk at boot and at resize; an
    unmarked image's filesystem stays the image's size (its guest would grow it itself)."""
    plain = await boot(real, "tiny", "plain-fs")
    grown = await boot(real, "growing", "grown-fs")
    assert fs_bytes(await wait_console(real, plain, "CANOPY-ROOTFS=")) < 64 << 20
    out = await wait_console(real, grown, "CANOPY-ROOTFS=")
    assert 0.85 * (1 << 30) < fs_bytes(out) <= 1 << 30 and "CANOPY-ROOTFS=canopy tiny guest disk" in out
    resp = await real.api.post("/compute/v2.1/flavors", headers=V, json={"flavor": {
        "name": "tiny.real.grow", "vcpus": 1, "ram": 256, "disk": 2}})
    assert resp.status_code == 200, resp.text
    await act(real, grown, {"resize": {"flavorRef": resp.json()["flavor"]["id"]}})
    await wait(real, grown, {"VERIFY_RESIZE"})
    out = await wait_console(real, grown, "CANOPY-ROOTFS=")
    assert 1.8 * (1 << 30) < fs_bytes(out) <= 2 << 30 and "CANOPY-ROOTFS=canopy tiny guest disk" in out
    for sid in (plain, grown):
        await delete(real, sid)


async def delete(real: RealCloud, sid: str) -> None:
    """Delete and wait until it is gone (the fixture's teardown must not race the delete)."""
    await real.api.delete(f"/compute/v2.1/servers/{sid}", headers=V, as_user="demo")
    for _ in range(300):
        if (await real.api.get(f"/compute/v2.1/servers/{sid}", headers=V)).status_code == 404:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"server {sid} was not deleted")


def _domain_xml(sid: str) -> str:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        return str(conn.lookupByUUIDString(sid).XMLDesc(0))
    finally:
        conn.close()


async def test_snapshot_image_boots_and_prints_its_marker(real: RealCloud) -> None:
    sid = await boot(real, "tiny", "snap-1")
    await wait_console(real, sid, "CANOPY-BOOTED")
    resp = await real.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, as_user="demo",
                               json={"createImage": {"name": "snap-of-snap-1"}})
    assert resp.status_code == 202, resp.text
    image_id = resp.json()["image_id"]
    await wait(real, sid, {"ACTIVE"})
    for _ in range(300):
        img = (await real.api.get(f"/image/v2/images/{image_id}")).json()
        if img.get("status") == "active" and (await show(real, sid))["OS-EXT-STS:task_state"] is None:
            break
        await asyncio.sleep(0.2)
    assert img["status"] == "active" and img["disk_format"] == "qcow2", img
    real.images["snap"] = image_id
    copy = await boot(real, "snap", "from-snap")
    out = await wait_console(real, copy, "CANOPY-BOOTED")
    assert "CANOPY-ROOTFS=canopy tiny guest disk" in out
    for server in (sid, copy):
        await delete(real, server)


async def test_rebuild_keeps_addresses_and_rescue_sees_the_disk(real: RealCloud) -> None:
    sid = await boot(real, "tiny", "rebuild-1")
    await wait_console(real, sid, "CANOPY-BOOTED")
    before = await show(real, sid)
    await act(real, sid, {"rebuild": {"imageRef": real.images["tiny"]}})
    s = await wait(real, sid, {"ACTIVE"})
    assert s["addresses"] == before["addresses"]
    ip = before["addresses"]["guestnet"][0]["addr"]
    out = await wait_console(real, sid, "CANOPY-BOOTED")
    assert f"CANOPY-IP={ip}" in out
    resp = await real.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, as_user="demo",
                               json={"rescue": {"rescue_image_ref": real.images["tiny"]}})
    assert resp.status_code == 200, resp.text
    await wait(real, sid, {"RESCUE"})
    xml = await asyncio.to_thread(_domain_xml, sid)
    own = str(real.settings.libvirt.instances_path / sid / "disk")
    assert f"<source file='{own}'" in xml and "<target dev='vdb'" in xml
    out = await wait_console(real, sid, "CANOPY-BOOTED")
    assert "CANOPY-EXTRA-DISK=vdb:canopy tiny guest disk" in out  # the rescue system sees the server's disk
    await act(real, sid, {"unrescue": None})
    await wait(real, sid, {"ACTIVE"})
    assert "rescue" not in await asyncio.to_thread(_domain_xml, sid)
    await delete(real, sid)
