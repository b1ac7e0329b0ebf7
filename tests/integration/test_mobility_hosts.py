# ruff: noqa: F811  (the shared fixture `real` is imported, then named as a test parameter)
"""Moving real tiny guests between two hosts on this machine, through the Compute API: live migration
(libvirt peer to peer, the disk's top layer copied, the guest's heartbeat never stopping), cold
migration (the disk pulled by the target agent over the bus) and evacuation off a dead host.

The two hosts are two libvirt daemons: the system one (agent `lv-1`) and a second system-mode libvirtd
in a mount namespace and a network namespace of its own with its own host UUID (agent `lv-2`,
tinyguest.second_libvirt), its guests' taps in that namespace, joined to this one by a veth pair whose
documentation addresses carry the migration streams. So the same port has a tap on each host while both
QEMUs run, as on two machines. Skipped with the reason where libvirt/QEMU or the second daemon cannot
run."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from canopy.agent.virt.vif import TapDevices, tap_name
from canopy.rpc.base import Target
from tests.clouds import wait_for_server
from tests.integration import tinyguest
from tests.integration.test_real_guest import (  # noqa: F401
    HOST,
    RealCloud,
    RecordingNet,
    real,
    show,
)

V = {"OpenStack-API-Version": "compute 2.87"}
SECOND = "lv-2"


class Second:
    """The second host: its libvirtd and its agent."""

    def __init__(self, daemon: tinyguest.SecondLibvirt, settings: Any) -> None:
        self.daemon, self.settings = daemon, settings
        self.agent: Any = None


NETNS = f"cnp-lv2-{uuid.uuid4().hex[:6]}"
FIRST_IP, SECOND_IP = "203.0.113.249", "203.0.113.250"  # the hosts' migration addresses, on a veth pair


def _sh(*args: str) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise tinyguest.GuestUnavailable(f"{' '.join(args)}: {proc.stderr.strip()}")


def _host_network() -> None:
    """The second host's network namespace, joined to this one by a veth pair with documentation addresses."""
    _sh("ip", "netns", "add", NETNS)
    _sh("ip", "link", "add", f"{NETNS[:9]}-a", "type", "veth", "peer", "name", "eth-mig", "netns", NETNS)
    _sh("ip", "addr", "add", f"{FIRST_IP}/30", "dev", f"{NETNS[:9]}-a")
    _sh("ip", "link", "set", f"{NETNS[:9]}-a", "up")
    _sh("ip", "-n", NETNS, "addr", "add", f"{SECOND_IP}/30", "dev", "eth-mig")
    _sh("ip", "-n", NETNS, "link", "set", "eth-mig", "up")
    _sh("ip", "-n", NETNS, "link", "set", "lo", "up")


@pytest.fixture(scope="module")
async def second(real: RealCloud) -> AsyncIterator[Second]:
    from canopy.agent.virt.libvirt.wiring import libvirt_agent

    try:
        _host_network()
        daemon = tinyguest.second_libvirt(netns=NETNS)
    except tinyguest.GuestUnavailable as exc:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        pytest.skip(f"no second libvirt host on this machine: {exc}")
    instances = Path(tempfile.mkdtemp(prefix="canopy-test-lv2-", dir="/var/tmp"))
    instances.chmod(0o755)
    settings = real.settings.model_copy(deep=True)
    settings.libvirt.uri = daemon.uri
    settings.libvirt.instances_path = instances
    settings.libvirt.migration_address = SECOND_IP
    real.settings.libvirt.migration_uri = daemon.first_uri()  # the first daemon, as the second reaches it
    real.settings.libvirt.migration_address = FIRST_IP
    host = Second(daemon, settings)
    try:
        host.agent = libvirt_agent(settings, SECOND, real.aio.cloud.bus, net=RecordingNet(),
                                   taps=TapDevices(netns=NETNS))
        await host.agent.start()
        await _wait_hypervisors(real, {HOST, SECOND})
        yield host
    finally:
        if host.agent is not None:
            for uuid in list(await host.agent.driver.guest_states()):
                await host.agent.driver.destroy(uuid)
            await host.agent.stop()
            real.aio.cloud.bus.unserve(Target("agent", SECOND))
        daemon.stop()
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)  # and the veth pair with it
        shutil.rmtree(instances, ignore_errors=True)


async def _wait_hypervisors(real: RealCloud, hosts: set[str]) -> None:
    """Until the scheduler's view holds both hosts (their first heartbeats and inventories)."""
    for _ in range(300):
        hyper = (await real.api.get("/compute/v2.1/os-hypervisors/detail", headers=V)).json()["hypervisors"]
        if hosts <= {h["hypervisor_hostname"] for h in hyper if h["state"] == "up"}:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"hypervisors {hosts} never came up")


async def boot_on(real: RealCloud, host: str, image: str, name: str) -> str:
    """Boot as admin on a given host (2.74 `host`), ACTIVE and booted."""
    body: dict[str, Any] = {"name": name, "imageRef": real.images[image], "flavorRef": real.flavor, "host": host,
                            "networks": [{"uuid": real.network}]}
    resp = await real.api.post("/compute/v2.1/servers", headers=V, json={"server": body})
    assert resp.status_code == 202, resp.text
    sid = str(resp.json()["server"]["id"])
    s = await wait_for_server(real.api, sid, {"ACTIVE", "ERROR"}, timeout=120)
    assert s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] == host, s
    await wait_console(real, sid, tinyguest.MARKER)
    return sid


async def console(real: RealCloud, sid: str) -> str:
    resp = await real.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V,
                               json={"os-getConsoleOutput": {}})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["output"])


async def wait_console(real: RealCloud, sid: str, text: str, timeout: float = 90.0) -> str:
    """The admin's console output once it shows `text` (these servers are the admin's)."""
    out = ""
    for _ in range(int(timeout / 0.3)):
        out = await console(real, sid)
        if text in out:
            return out
        await asyncio.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared on the console of {sid}; it shows:\n{out[-2000:]}")


async def action(real: RealCloud, sid: str, body: dict[str, Any]) -> Any:
    resp = await real.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, json=body)
    assert resp.status_code in (200, 202, 204), resp.text
    return resp


async def settled(real: RealCloud, sid: str, statuses: set[str], timeout: float = 240) -> dict[str, Any]:
    """The server in one of `statuses` with no task running (or ERROR, which fails)."""
    for _ in range(int(timeout * 5)):
        s = await show(real, sid)
        if s["status"] == "ERROR":
            raise AssertionError(f"{sid} went to ERROR: {s.get('fault')}")
        if s["status"] in statuses and s["OS-EXT-STS:task_state"] is None:
            return s
        await asyncio.sleep(0.2)
    raise AssertionError(f"{sid} never reached {statuses}: {await show(real, sid)}")


def domains(uri: str) -> set[str]:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return {d.UUIDString() for d in conn.listAllDomains()}
    finally:
        conn.close()


def ticks(out: str) -> list[int]:
    return [int(t) for t in re.findall(r"CANOPY-TICK=(\d+)", out)]


async def delete(real: RealCloud, sid: str) -> None:
    await real.api.delete(f"/compute/v2.1/servers/{sid}", headers=V)
    await wait_for_server(real.api, sid, {"DELETED"}, timeout=60)


async def test_live_migration_keeps_the_guest_running(real: RealCloud, second: Second) -> None:
    sid = await boot_on(real, HOST, "ticking", "live-1")
    port = (await real.api.get(f"/network/v2.0/ports?device_id={sid}")).json()["ports"][0]
    tap, here, there = tap_name(port["id"]), TapDevices(), TapDevices(netns=NETNS)
    assert here.exists(tap) and not there.exists(tap)
    await wait_console(real, sid, "CANOPY-TICK=3")
    before = ticks(await console(real, sid))[-1]
    await action(real, sid, {"os-migrateLive": {"host": SECOND, "block_migration": True}})
    s = await settled(real, sid, {"ACTIVE"})
    assert s["OS-EXT-SRV-ATTR:host"] == SECOND, s
    assert sid in await asyncio.to_thread(domains, second.daemon.uri)
    assert sid not in await asyncio.to_thread(domains, "qemu:///system")
    assert not (real.settings.libvirt.instances_path / sid).exists()  # the source's folder is gone
    assert there.exists(tap) and not here.exists(tap)  # the NIC's tap moved with it
    # The console is now the destination's log: the heartbeat goes on from where it was, no new boot.
    out = await wait_console(real, sid, f"CANOPY-TICK={before + 5}", timeout=60)
    assert tinyguest.MARKER not in out and ticks(out)[0] >= before - 1, out[-500:]
    migs = (await real.api.get(f"/compute/v2.1/os-migrations?instance_uuid={sid}", headers=V)).json()["migrations"]
    live = [m for m in migs if m["migration_type"] == "live-migration"]
    assert live and live[0]["status"] == "completed", migs
    assert (live[0]["source_compute"], live[0]["dest_compute"]) == (HOST, SECOND)
    # and back: the second daemon migrates to the first
    before = ticks(await console(real, sid))[-1]
    await action(real, sid, {"os-migrateLive": {"host": HOST, "block_migration": True}})
    s = await settled(real, sid, {"ACTIVE"})
    assert s["OS-EXT-SRV-ATTR:host"] == HOST, s
    assert sid not in await asyncio.to_thread(domains, second.daemon.uri)
    assert here.exists(tap) and not there.exists(tap)
    out = await wait_console(real, sid, f"CANOPY-TICK={before + 3}", timeout=60)
    assert tinyguest.MARKER not in out, out[-500:]
    await delete(real, sid)
    assert sid not in await asyncio.to_thread(domains, second.daemon.uri)


async def test_live_migration_progress_and_abort(real: RealCloud, second: Second) -> None:
    """Slowed to 1 MiB/s, the migration shows its progress; DELETE aborts it and the guest stays, running."""
    sid = await boot_on(real, HOST, "ticking", "live-abort")
    real.settings.libvirt.live_migration_bandwidth_mib = 1
    real.settings.mobility.progress_poll_s = 0.2
    try:
        await action(real, sid, {"os-migrateLive": {"host": SECOND, "block_migration": True}})
        migs: list[Any] = []
        for _ in range(300):
            migs = (await real.api.get(f"/compute/v2.1/servers/{sid}/migrations", headers=V)).json()["migrations"]
            if migs and migs[0]["memory_processed_bytes"]:
                break
            await asyncio.sleep(0.1)
        assert migs and migs[0]["status"] == "running", migs
        assert 0 < migs[0]["memory_processed_bytes"] < migs[0]["memory_total_bytes"], migs
        resp = await real.api.delete(f"/compute/v2.1/servers/{sid}/migrations/{migs[0]['id']}", headers=V)
        assert resp.status_code == 202, resp.text
        s = await settled(real, sid, {"ACTIVE"})
    finally:
        real.settings.libvirt.live_migration_bandwidth_mib = 0
    assert s["OS-EXT-SRV-ATTR:host"] == HOST, s
    assert sid in await asyncio.to_thread(domains, "qemu:///system")
    assert sid not in await asyncio.to_thread(domains, second.daemon.uri)
    assert not (second.settings.libvirt.instances_path / sid).exists()  # the destination's leftovers went
    last = ticks(await console(real, sid))[-1]
    await wait_console(real, sid, f"CANOPY-TICK={last + 2}")  # still running where it was
    migs = (await real.api.get(f"/compute/v2.1/os-migrations?instance_uuid={sid}", headers=V)).json()["migrations"]
    assert migs[0]["status"] == "cancelled", migs
    await delete(real, sid)


async def test_cold_migration_moves_the_disk_to_the_other_host(real: RealCloud, second: Second) -> None:
    sid = await boot_on(real, HOST, "tiny", "cold-1")
    before = await show(real, sid)
    await action(real, sid, {"migrate": {"host": SECOND}})
    s = await settled(real, sid, {"VERIFY_RESIZE"})
    assert s["OS-EXT-SRV-ATTR:host"] == SECOND and s["addresses"] == before["addresses"], s
    assert sid in await asyncio.to_thread(domains, second.daemon.uri)
    assert (second.settings.libvirt.instances_path / sid / "disk").exists()
    out = await wait_console(real, sid, tinyguest.MARKER)
    assert "CANOPY-ROOTFS=canopy tiny guest disk" in out  # the copied disk, rebased on lv-2's base
    port = (await real.api.get(f"/network/v2.0/ports?device_id={sid}")).json()["ports"][0]
    tap = tap_name(port["id"])
    assert TapDevices().exists(tap) and TapDevices(netns=NETNS).exists(tap)  # kept until confirmed
    await action(real, sid, {"confirmResize": None})
    await settled(real, sid, {"ACTIVE"})
    assert not (real.settings.libvirt.instances_path / f"{sid}_resize").exists()
    assert not TapDevices().exists(tap) and TapDevices(netns=NETNS).exists(tap)  # the source's went
    await delete(real, sid)


async def test_evacuation_rebuilds_servers_of_a_dead_host(real: RealCloud, second: Second) -> None:
    sids = [await boot_on(real, HOST, "tiny", f"evac-{n}") for n in (1, 2)]
    before = {sid: await show(real, sid) for sid in sids}
    resp = await real.api.get("/compute/v2.1/os-services?binary=canopy-agent", headers=V)
    svc = next(s for s in resp.json()["services"] if s["host"] == HOST)
    await real.stop_agent()  # the host dies: its agent first, then its guests
    try:
        import libvirt

        conn = libvirt.open("qemu:///system")
        try:
            for sid in sids:
                conn.lookupByUUIDString(sid).destroy()
        finally:
            conn.close()
        resp = await real.api.put(f"/compute/v2.1/os-services/{svc['id']}", headers=V, json={"forced_down": True})
        assert resp.status_code == 200, resp.text
        for sid in sids:
            await action(real, sid, {"evacuate": {}})
        for sid in sids:
            s = await settled(real, sid, {"ACTIVE"})
            assert s["OS-EXT-SRV-ATTR:host"] == SECOND and s["addresses"] == before[sid]["addresses"], s
            ip = before[sid]["addresses"]["guestnet"][0]["addr"]
            out = await wait_console(real, sid, tinyguest.MARKER)
            assert f"CANOPY-IP={ip}" in out  # rebuilt from its image, with its own config drive
        assert set(sids) <= await asyncio.to_thread(domains, second.daemon.uri)
        assert set(sids) <= await asyncio.to_thread(domains, "qemu:///system")  # the dead host's leftovers
    finally:
        resp = await real.api.put(f"/compute/v2.1/os-services/{svc['id']}", headers=V, json={"forced_down": False})
        await real.start_agent()
    # The host is back: its reconcile removes the guests evacuated off it, and the evacuations complete.
    assert not set(sids) & await asyncio.to_thread(domains, "qemu:///system")
    assert not any((real.settings.libvirt.instances_path / sid).exists() for sid in sids)
    for _ in range(100):
        migs = (await real.api.get(f"/compute/v2.1/os-migrations?migration_type=evacuation&host={HOST}",
                                   headers=V)).json()["migrations"]
        if {m["status"] for m in migs if m["instance_uuid"] in sids} == {"completed"}:
            break
        await asyncio.sleep(0.1)
    assert {m["instance_uuid"] for m in migs if m["status"] == "completed"} >= set(sids), migs
    for sid in sids:
        await delete(real, sid)
