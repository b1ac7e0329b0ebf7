"""Resize, snapshot, cold and live migration of the tiny guest on this machine's libvirt, through the
Compute API.

    .venv/bin/python bench/mobility.py            # three rounds of each, medians
    .venv/bin/python bench/mobility.py --quick    # one round each

An all-in-one runs in this process with two libvirt agents, as the tests do: `bench-hv1` on this
machine's qemu:///system (libvirtd/virtlogd started if not running, stopped afterwards) and `bench-hv2`
on a second system libvirtd in its own mount namespace with its own host UUID
(tinyguest.second_libvirt), so the two are two hosts to libvirt; the tiny guest of
tests/integration/tinyguest.py. Timed from the API call:

- resize_s: `resize` to a flavor with 2 vCPUs and a 2 GB disk → VERIFY_RESIZE → the guest prints its
  boot marker again (then `confirmResize`);
- snapshot_s: `createImage` → the image is active and the server has no task;
- cold_migrate_s: `migrate` (admin) → VERIFY_RESIZE on the other agent → boot marker (then confirm);
- live_migrate_s: `os-migrateLive` (admin, to the other host) → ACTIVE there with no task (a running
  guest without a NIC: both daemons share one kernel, which cannot hold the same tap twice).

The machine is shared, so figures are medians and noisy. The last line is one JSON object.
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
from bench.compute import setup, token  # noqa: E402
from tests.integration import tinyguest  # noqa: E402

V = {"OpenStack-API-Version": "compute 2.87"}


async def server(c: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    return (await c.get(f"/compute/v2.1/servers/{sid}")).json()["server"]  # type: ignore[no-any-return]


async def wait_status(c: httpx.AsyncClient, sid: str, want: str, timeout: float = 300) -> dict[str, Any]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = await server(c, sid)
        if s["status"] == "ERROR":
            raise RuntimeError(f"server {sid} went to ERROR: {s.get('fault')}")
        if s["status"] == want and s.get("OS-EXT-STS:task_state") is None:
            return s
        await asyncio.sleep(0.05)
    raise RuntimeError(f"server {sid} not {want} after {timeout}s")


async def console_count(c: httpx.AsyncClient, sid: str) -> int:
    out = (await c.post(f"/compute/v2.1/servers/{sid}/action", json={"os-getConsoleOutput": {}})).json()
    return str(out.get("output", "")).count(tinyguest.MARKER)


async def wait_marker(c: httpx.AsyncClient, sid: str, more_than: int = 0, timeout: float = 300) -> None:
    """Until the console shows the boot marker more often than before (a new boot)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await console_count(c, sid) > more_than:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server {sid} printed no new {tinyguest.MARKER} in {timeout}s")


async def act(c: httpx.AsyncClient, sid: str, body: dict[str, Any]) -> httpx.Response:
    resp = await c.post(f"/compute/v2.1/servers/{sid}/action", json=body)
    if resp.status_code >= 400:
        raise RuntimeError(f"{next(iter(body))} answered {resp.status_code}: {resp.text[:300]}")
    return resp


async def boot(c: httpx.AsyncClient, ids: dict[str, str], name: str) -> str:
    resp = await c.post("/compute/v2.1/servers", json={"server": {
        "name": name, "imageRef": ids["image"], "flavorRef": ids["flavor"], "networks": [{"uuid": ids["network"]}]}})
    resp.raise_for_status()
    sid = str(resp.json()["server"]["id"])
    await wait_status(c, sid, "ACTIVE")
    await wait_marker(c, sid)
    return sid


async def resize_once(c: httpx.AsyncClient, sid: str, flavor: str) -> float:
    """Seconds from `resize` to the resized guest booted; confirmed afterwards (not timed)."""
    # the resized guest has a new folder, so a new console log, wherever it runs
    t0 = time.monotonic()
    await act(c, sid, {"resize": {"flavorRef": flavor}})
    await wait_status(c, sid, "VERIFY_RESIZE")
    await wait_marker(c, sid)
    took = time.monotonic() - t0
    await act(c, sid, {"confirmResize": None})
    s = await wait_status(c, sid, "ACTIVE")
    _host[sid] = s["OS-EXT-SRV-ATTR:host"]
    return took


async def migrate_once(c: httpx.AsyncClient, sid: str) -> tuple[float, str, str]:
    """Seconds from `migrate` to the guest booted on the other agent; confirmed afterwards."""
    before = (await server(c, sid))["OS-EXT-SRV-ATTR:host"]
    t0 = time.monotonic()
    await act(c, sid, {"migrate": None})
    s = await wait_status(c, sid, "VERIFY_RESIZE")
    await wait_marker(c, sid, 0)
    took = time.monotonic() - t0
    after = s["OS-EXT-SRV-ATTR:host"]
    await act(c, sid, {"confirmResize": None})
    await wait_status(c, sid, "ACTIVE")
    _host[sid] = after
    return took, before, after


async def live_once(c: httpx.AsyncClient, sid: str) -> tuple[float, str, str]:
    """Seconds from `os-migrateLive` to the server ACTIVE on the other host with no task."""
    before = (await server(c, sid))["OS-EXT-SRV-ATTR:host"]
    t0 = time.monotonic()
    await act(c, sid, {"os-migrateLive": {"host": None, "block_migration": True}})
    while time.monotonic() - t0 < 300:
        s = await server(c, sid)
        if s["status"] == "ERROR":
            raise RuntimeError(f"live migration of {sid} failed: {s.get('fault')}")
        if s["status"] == "ACTIVE" and s.get("OS-EXT-STS:task_state") is None:
            if s["OS-EXT-SRV-ATTR:host"] == before:
                raise RuntimeError(f"live migration of {sid} ended on {before}: {s}")
            return time.monotonic() - t0, before, s["OS-EXT-SRV-ATTR:host"]
        await asyncio.sleep(0.05)
    raise RuntimeError("live migration not done in 300 s")


async def snapshot_once(c: httpx.AsyncClient, sid: str, n: int) -> float:
    """Seconds from `createImage` to an active image and a server without a task; the image is deleted."""
    t0 = time.monotonic()
    resp = await act(c, sid, {"createImage": {"name": f"bench-snap-{n}"}})
    image_id = resp.json()["image_id"]
    while time.monotonic() - t0 < 300:
        img = (await c.get(f"/image/v2/images/{image_id}")).json()
        if img.get("status") == "active" and (await server(c, sid)).get("OS-EXT-STS:task_state") is None:
            took = time.monotonic() - t0
            print(f"  snapshot image {image_id}: {img.get('disk_format')}, {img.get('size')} bytes")
            await c.delete(f"/image/v2/images/{image_id}")
            return took
        if img.get("status") in ("killed", "deleted") or "status" not in img:
            raise RuntimeError(f"snapshot {image_id} failed: {img}")
        await asyncio.sleep(0.1)
    raise RuntimeError("snapshot not active in 300 s")


_host: dict[str, str] = {}


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None


async def run(quick: bool) -> dict[str, Any]:
    from canopy.agent.virt.libvirt.wiring import libvirt_agent
    from canopy.allinone import AllInOne
    from canopy.config import Settings

    guest = tinyguest.build()
    local = tinyguest.ensure_libvirt()
    work = Path(tempfile.mkdtemp(prefix="canopy-bench-mob-", dir="/var/tmp"))
    work.chmod(0o755)
    port = __import__("bench._cloud", fromlist=["free_port"]).free_port()
    settings = Settings(data_dir=work / "data").resolved()
    settings.api.rate_limits.enabled = False  # figures of the control plane, not of its limits
    settings.api.port, settings.api.public_url = port, f"http://127.0.0.1:{port}"
    settings.log_level = "WARNING"
    settings.mobility.allow_resize_to_same_host = True
    lv = settings.libvirt
    lv.accel_probe_kernel, lv.accel_probe_initrd = guest.kernel, guest.initrd
    lv.accel_probe_cmdline, lv.accel_probe_marker = tinyguest.CMDLINE + " canopy.probe", tinyguest.PROBE_MARKER
    lv.accel_probe_timeout_s = 10.0
    aio = AllInOne(settings, hosts=0, serve_http=True)
    await aio.start()
    agents: list[Any] = []
    rounds = 1 if quick else 3
    res: dict[str, list[float]] = {"resize": [], "snapshot": [], "cold": [], "live": []}
    moves: list[str] = []
    second = None
    try:
        second = tinyguest.second_libvirt()
        for n, uri, peer in ((1, "qemu:///system", second.first_uri()), (2, second.uri, second.uri)):
            s = settings.model_copy(deep=True)  # two hosts to libvirt, on one machine
            s.libvirt.uri, s.libvirt.migration_uri, s.libvirt.migration_address = uri, peer, "127.0.0.1"
            s.libvirt.instances_path = work / f"instances{n}"
            agent = libvirt_agent(s, f"bench-hv{n}", aio.cloud.bus)
            await agent.start()
            agents.append(agent)
        async with httpx.AsyncClient(base_url=settings.api.public_url, timeout=120) as c:
            c.headers.update({"X-Auth-Token": await token(c), **V})
            ids = await setup(c, guest)
            big = (await c.post("/compute/v2.1/flavors", json={"flavor": {
                "name": "bench.tiny.2", "vcpus": 2, "ram": 320, "disk": 2}})).json()["flavor"]["id"]
            print(f"accelerator: {agents[0].driver.host_info().accelerator}   kernel {guest.version}   "
                  "(medians; a shared machine: noisy)")
            sid = await boot(c, ids, "mob-1")
            _host[sid] = (await server(c, sid))["OS-EXT-SRV-ATTR:host"]
            for n in range(rounds):
                res["resize"].append(await resize_once(c, sid, big))
                print(f"resize → 2 vCPU / 2 GB: {res['resize'][-1]:.2f}s (to {_host[sid]})")
                res["snapshot"].append(await snapshot_once(c, sid, n))
                print(f"snapshot: {res['snapshot'][-1]:.2f}s")
                took, src, dst = await migrate_once(c, sid)
                res["cold"].append(took)
                moves.append(f"{src}->{dst}")
                print(f"cold migration {src} → {dst}: {took:.2f}s")
                if n + 1 < rounds:  # disks only grow: a fresh server for the next round's resize
                    await c.delete(f"/compute/v2.1/servers/{sid}")
                    sid = await boot(c, ids, f"mob-{n + 2}")
                    _host[sid] = (await server(c, sid))["OS-EXT-SRV-ATTR:host"]
            await c.delete(f"/compute/v2.1/servers/{sid}")
            resp = await c.post("/compute/v2.1/servers", json={"server": {
                "name": "live-1", "imageRef": ids["image"], "flavorRef": ids["flavor"], "networks": "none"}})
            resp.raise_for_status()
            live = str(resp.json()["server"]["id"])
            await wait_status(c, live, "ACTIVE")
            await wait_marker(c, live)
            for _ in range(rounds):
                took, src, dst = await live_once(c, live)
                res["live"].append(took)
                print(f"live migration {src} → {dst}: {took:.2f}s")
            await c.delete(f"/compute/v2.1/servers/{live}")
            await asyncio.sleep(1.0)
    finally:
        for agent in agents:
            for uuid in list(await agent.driver.guest_states()):
                await agent.driver.destroy(uuid)
            await agent.stop()
        await aio.stop()
        if second is not None:
            second.stop()
        local.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"resize_s": _median(res["resize"]), "snapshot_s": _median(res["snapshot"]),
            "cold_migrate_s": _median(res["cold"]), "live_migrate_s": _median(res["live"]), "rounds": rounds,
            "cold_migrations": moves,
            "driver": "libvirt (real, TCG/KVM as detected; two libvirt daemons on one machine)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of each")
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args.quick))
    except tinyguest.GuestUnavailable as exc:
        reason = f"cannot run real guests here: {exc}"
        print(f"resize, snapshot, cold and live migration: null ({reason})", file=sys.stderr)
        result = {"resize_s": None, "snapshot_s": None, "cold_migrate_s": None, "live_migrate_s": None,
                  "skipped": reason}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
