"""Real guests on this machine's libvirt: create → ACTIVE, create → booted (the guest's console marker),
overlay disk creation from a cached base, concurrent boots on one agent, and what Canopy adds to a boot:
`raw_boot_s`, the same guest started straight through libvirt (the domain XML Canopy made, a fresh
overlay of the same cached base, the same config drive; its network interfaces left out, since their
taps belong to Canopy's guest), and `overhead_s`, the median over ≥ 5 alternating Canopy/raw pairs (warm
image cache) of create→booted minus the raw boot.

    .venv/bin/python bench/compute.py            # boots 1, then 4, then 8 guests at once
    .venv/bin/python bench/compute.py --quick    # boots one guest

Runs an all-in-one in this process whose only hypervisor is qemu:///system (libvirtd and virtlogd are
started if they are not running, and stopped afterwards), builds the tiny guest of the tests
(tests/integration/tinyguest.py, cached under ~/.cache/canopy-test/), and drives it over HTTP like a
client. The machine is shared, so figures are medians and noisy. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.integration import tinyguest  # noqa: E402

V = {"OpenStack-API-Version": "compute 2.87"}


async def token(client: httpx.AsyncClient) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "admin"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    resp = await client.post("/identity/v3/auth/tokens", json=body)
    resp.raise_for_status()
    return resp.headers["x-subject-token"]


async def upload(c: httpx.AsyncClient, name: str, path: Path, disk_format: str, **props: str) -> str:
    container = disk_format if disk_format in ("aki", "ari") else "bare"
    resp = await c.post("/image/v2/images", json={"name": name, "disk_format": disk_format,
                                                  "container_format": container, "visibility": "public", **props})
    resp.raise_for_status()
    image_id = str(resp.json()["id"])
    (await c.put(f"/image/v2/images/{image_id}/file", content=path.read_bytes(),
                 headers={"Content-Type": "application/octet-stream"})).raise_for_status()
    return image_id


async def setup(c: httpx.AsyncClient, guest: tinyguest.TinyGuest) -> dict[str, str]:
    kernel = await upload(c, "tiny-kernel", guest.kernel, "aki")
    ramdisk = await upload(c, "tiny-ramdisk", guest.initrd, "ari")
    image = await upload(c, "tiny", guest.disk, "qcow2", kernel_id=kernel, ramdisk_id=ramdisk,
                         os_command_line=tinyguest.CMDLINE)
    flavor = (await c.post("/compute/v2.1/flavors", json={"flavor": {"name": "bench.tiny", "vcpus": 1, "ram": 256,
                                                                      "disk": 1}})).json()["flavor"]["id"]
    net = (await c.post("/network/v2.0/networks", json={"network": {"name": "benchnet"}})).json()["network"]["id"]
    (await c.post("/network/v2.0/subnets", json={"subnet": {"network_id": net, "ip_version": 4,
                                                            "cidr": "198.51.100.0/24"}})).raise_for_status()
    await c.put("/compute/v2.1/os-quota-sets/admin", json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}})
    return {"image": image, "flavor": flavor, "network": net}


async def one_boot(c: httpx.AsyncClient, ids: dict[str, str], name: str, keep: bool = False) -> dict[str, float]:
    """Create a server; seconds to ACTIVE and to the console marker (deleted after, unless `keep`)."""
    t0 = time.monotonic()
    resp = await c.post("/compute/v2.1/servers", json={"server": {
        "name": name, "imageRef": ids["image"], "flavorRef": ids["flavor"], "networks": [{"uuid": ids["network"]}]}})
    resp.raise_for_status()
    sid = resp.json()["server"]["id"]
    active = booted = None
    while booted is None and time.monotonic() - t0 < 300:
        if active is None:
            server = (await c.get(f"/compute/v2.1/servers/{sid}")).json()["server"]
            if server["status"] == "ERROR":
                raise RuntimeError(f"{name} failed: {server.get('fault')}")
            if server["status"] == "ACTIVE":
                active = time.monotonic() - t0
        if active is not None:
            out = (await c.post(f"/compute/v2.1/servers/{sid}/action", json={"os-getConsoleOutput": {}})).json()
            if tinyguest.MARKER in out.get("output", ""):
                booted = time.monotonic() - t0
        await asyncio.sleep(0.05)
    if booted is None or active is None:
        raise RuntimeError(f"{name} did not boot in 300 s")
    if not keep:
        await c.delete(f"/compute/v2.1/servers/{sid}")
    return {"active": active, "booted": booted, "id": sid}  # type: ignore[dict-item]


def raw_xml(xml: str, folder: Path, disk: Path) -> str:
    """Canopy's domain XML for a guest of its own: new name and uuid, its overlay, its console log and a
    copy of the config drive in `folder`, no network interfaces."""
    import os
    import uuid
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    ident = uuid.uuid4()
    root.find("name").text = f"canopy-raw-{ident.hex[:8]}"  # type: ignore[union-attr]
    root.find("uuid").text = str(ident)  # type: ignore[union-attr]
    devices = root.find("devices")
    assert devices is not None
    for iface in devices.findall("interface"):
        devices.remove(iface)
    for d in devices.findall("disk"):
        src, target = d.find("source"), d.find("target")
        if src is None or target is None:
            continue
        if target.get("dev") == "vda":
            src.set("file", str(disk))
        elif src.get("file") and not Path(src.get("file", "")).is_relative_to(folder.parent / "raw-template"):
            copy = folder.parent / "raw-template" / Path(src.get("file", "")).name  # kept for every raw boot
            copy.parent.mkdir(exist_ok=True)
            shutil.copy(src.get("file", ""), copy)
            os.chmod(copy, 0o644)
            src.set("file", str(copy))
    serial = devices.find("./serial[@type='file']/source")
    if serial is not None:
        serial.set("path", str(folder / "console.log"))
    meta = root.find("metadata")
    if meta is not None:
        root.remove(meta)
    return ET.tostring(root, encoding="unicode")


async def raw_boot(driver: Any, image_id: str, xml: str, n: int) -> float:
    """Seconds from nothing to the console marker for the guest started straight through libvirt: its
    overlay disk made from the cached base, then the domain created from the XML."""
    import os

    from canopy.agent.disk import qemuimg

    folder = Path(tempfile.mkdtemp(dir=driver.root, prefix=f"raw{n}-"))
    folder.chmod(0o755)
    conn = driver.hv.connection()
    dom = None
    try:
        t0 = time.monotonic()
        base = await driver.cache.get(image_id)
        await qemuimg.create_overlay(base.path, base.disk_format, folder / "disk", 1 << 30)
        os.chmod(folder / "disk", 0o666)
        dom = await asyncio.to_thread(conn.createXML, raw_xml(xml, folder, folder / "disk"), 0)
        log = folder / "console.log"
        while time.monotonic() - t0 < 300:
            if log.exists() and tinyguest.MARKER in log.read_text(errors="replace"):
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
        raise RuntimeError("the raw guest did not boot in 300 s")
    finally:
        if dom is not None:
            await asyncio.to_thread(dom.destroy)
        shutil.rmtree(folder, ignore_errors=True)


async def overhead_pairs(c: httpx.AsyncClient, ids: dict[str, str], driver: Any, pairs: int
                         ) -> dict[str, Any]:
    """Alternate Canopy boots and raw boots of the same guest; the median of the pairs' differences."""
    diffs, raws, canopy = [], [], []
    xml = None
    for n in range(pairs):
        r = await one_boot(c, ids, f"pair-{n}", keep=xml is None)
        if xml is None:  # the domain XML Canopy made, taken from its first guest of the pairs
            dom = await driver.hv.dom(r["id"])
            # its config drive copied aside (it goes with the server): every raw boot uses that copy
            xml = raw_xml(await asyncio.to_thread(dom.XMLDesc, 0), Path(driver.root) / "template", Path("/dev/null"))
            await c.delete(f"/compute/v2.1/servers/{r['id']}")
        await wait_gone(c, [r["id"]])  # type: ignore[list-item]
        raw = await raw_boot(driver, ids["image"], xml, n)
        canopy.append(r["booted"])
        raws.append(raw)
        diffs.append(r["booted"] - raw)
        print(f"pair {n}: Canopy create→booted {r['booted']:.2f}s, raw libvirt boot {raw:.2f}s")
    return {"raw_boot_s": round(statistics.median(raws), 2), "overhead_s": round(statistics.median(diffs), 2),
            "pairs": [{"canopy_s": round(a, 2), "raw_s": round(b, 2)} for a, b in zip(canopy, raws, strict=True)]}


async def wait_gone(c: httpx.AsyncClient, sids: list[str]) -> None:
    for sid in sids:
        while (await c.get(f"/compute/v2.1/servers/{sid}")).status_code != 404:
            await asyncio.sleep(0.1)


async def disk_from_base_ms(driver: Any, image_id: str, rounds: int = 10) -> float:
    """Median time to make a guest's qcow2 overlay from the cached base."""
    from canopy.agent.disk import qemuimg

    base = await driver.cache.get(image_id)
    folder = Path(tempfile.mkdtemp(dir=driver.root))
    times = []
    for n in range(rounds):
        t0 = time.perf_counter()
        await qemuimg.create_overlay(base.path, base.disk_format, folder / f"disk{n}", 1 << 30)
        times.append((time.perf_counter() - t0) * 1000)
    shutil.rmtree(folder)
    return statistics.median(times)


async def run(quick: bool, pairs: int = 5) -> dict[str, Any]:
    from canopy.agent.virt.libvirt.wiring import libvirt_agent
    from canopy.allinone import AllInOne
    from canopy.config import Settings

    guest = tinyguest.build()
    local = tinyguest.ensure_libvirt()
    work = Path(tempfile.mkdtemp(prefix="canopy-bench-", dir="/var/tmp"))
    work.chmod(0o755)
    port = __import__("bench._cloud", fromlist=["free_port"]).free_port()
    settings = Settings(data_dir=work / "data").resolved()
    settings.api.rate_limits.enabled = False  # figures of the control plane, not of its limits
    settings.api.port, settings.api.public_url = port, f"http://127.0.0.1:{port}"
    settings.log_level = "WARNING"
    lv = settings.libvirt
    lv.instances_path = work / "instances"
    lv.accel_probe_kernel, lv.accel_probe_initrd = guest.kernel, guest.initrd
    lv.accel_probe_cmdline, lv.accel_probe_marker = tinyguest.CMDLINE + " canopy.probe", tinyguest.PROBE_MARKER
    lv.accel_probe_timeout_s = 10.0
    aio = AllInOne(settings, hosts=0, serve_http=True)
    await aio.start()
    agent = None
    try:
        async with httpx.AsyncClient(base_url=settings.api.public_url, timeout=120) as c:
            c.headers.update({"X-Auth-Token": await token(c), **V})
            ids = await setup(c, guest)
            agent = libvirt_agent(settings, "bench-hv", aio.cloud.bus)
            await agent.start()
            accel = agent.driver.host_info().accelerator
            print(f"accelerator: {accel}   kernel {guest.version}   (medians; a shared machine: noisy)")
            warm = await one_boot(c, ids, "warm-up")  # fills the image cache: later boots use the cached base
            await wait_gone(c, [warm["id"]])  # type: ignore[list-item]
            print(f"first boot (image download included): ACTIVE {warm['active']:.2f}s, booted {warm['booted']:.2f}s")
            disk_ms = await disk_from_base_ms(agent.driver, ids["image"])
            print(f"overlay disk from cached base: {disk_ms:.1f} ms")
            overhead = await overhead_pairs(c, ids, agent.driver, pairs)
            print(f"raw libvirt boot median {overhead['raw_boot_s']:.2f}s; Canopy's overhead (median of pairs) "
                  f"{overhead['overhead_s']:.2f}s")
            rounds: dict[str, dict[str, float]] = {}
            for n in ((1,) if quick else (1, 4, 8)):
                results = await asyncio.gather(*(one_boot(c, ids, f"b{n}-{i}") for i in range(n)))
                await wait_gone(c, [r["id"] for r in results])  # type: ignore[misc]
                act = statistics.median(r["active"] for r in results)
                boot = statistics.median(r["booted"] for r in results)
                worst = max(r["booted"] for r in results)
                rounds[str(n)] = {"create_to_active_s": round(act, 2), "create_to_booted_s": round(boot, 2),
                                  "slowest_booted_s": round(worst, 2)}
                print(f"{n} at once: create→ACTIVE median {act:.2f}s, create→booted median {boot:.2f}s, "
                      f"slowest booted {worst:.2f}s")
    finally:
        if agent is not None:
            for uuid in list(await agent.driver.guest_states()):
                await agent.driver.destroy(uuid)
            await agent.stop()
        await aio.stop()
        local.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"create_to_active_s": rounds["1"]["create_to_active_s"],
            "create_to_booted_s": rounds["1"]["create_to_booted_s"], "disk_from_base_ms": round(disk_ms, 1),
            "raw_boot_s": overhead["raw_boot_s"], "overhead_s": overhead["overhead_s"],
            "overhead_pairs": overhead["pairs"], "accel": accel, "concurrent": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="boot one guest (and the overhead pairs)")
    parser.add_argument("--pairs", type=int, default=5, help="alternating Canopy/raw boots for overhead_s")
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args.quick, max(args.pairs, 1)))
    except tinyguest.GuestUnavailable as exc:
        print(f"cannot run real guests here: {exc}")
        result = {"create_to_active_s": None, "create_to_booted_s": None, "disk_from_base_ms": None,
                  "accel": None, "skipped": str(exc)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
