"""Real guests: a tiny Debian-kernel guest booted through the Compute API on an agent with the libvirt
driver (QEMU; KVM is tried and TCG used when KVM does not boot guests here), read back through
os-getConsoleOutput, stopped softly and hard, rebooted, and carried across agent restarts."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from canopy.agent.virt.base import PowerState
from canopy.agent.virt.vif import TapDevices, tap_name
from canopy.rpc.calls import PortSpec
from tests.clouds import ApiClient, make_settings, wait_for_server
from tests.integration import tinyguest

V = {"OpenStack-API-Version": "compute 2.87"}
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINFJPzQxaDEdEz3vqJEeeIFRNlrxmUQlD9ika3EvvV73 canopy-test"
HOST = "lv-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RecordingNet:
    """Stands in for the network agent: records plugs (checking each tap exists at that moment) and flow
    reapplications."""

    def __init__(self) -> None:
        self.plugged: list[tuple[str, list[str], bool]] = []
        self.reapplied = 0

    async def wait_ready(self) -> None:
        return None

    async def plug(self, instance_uuid: str, ports: list[PortSpec], devices: list[str]) -> None:
        self.plugged.append((instance_uuid, devices, all(Path("/sys/class/net", d).exists() for d in devices)))

    async def reapply(self) -> None:
        self.reapplied += 1


class RealCloud:
    def __init__(self, aio: Any, api: ApiClient, settings: Any, images: dict[str, str], net: RecordingNet) -> None:
        self.aio, self.api, self.settings, self.images, self.net = aio, api, settings, images, net
        self.agent: Any = None
        self.node: Any = None  # the agent's network node (default: compile only, as settings say)
        self.flavor = ""
        self.network = ""

    @property
    def driver(self) -> Any:
        return self.agent.driver

    async def start_agent(self) -> Any:
        from canopy.agent.virt.libvirt.wiring import libvirt_agent

        self.agent = libvirt_agent(self.settings, HOST, self.aio.cloud.bus, net=self.net, taps=TapDevices(),
                                   node=self.node)
        await self.agent.start()
        return self.agent

    async def stop_agent(self) -> None:
        await self.agent.stop()
        self.aio.cloud.bus.unserve(__import__("canopy.rpc.base", fromlist=["Target"]).Target("agent", HOST))


async def _upload(api: ApiClient, name: str, path: Path, disk_format: str, **props: str) -> str:
    container = disk_format if disk_format in ("aki", "ari") else "bare"
    resp = await api.post("/image/v2/images", json={"name": name, "disk_format": disk_format,
                                                    "container_format": container, "visibility": "public", **props})
    assert resp.status_code == 201, resp.text
    image_id = resp.json()["id"]
    resp = await api.put(f"/image/v2/images/{image_id}/file", content=path.read_bytes(),
                         headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 204, resp.text
    return str(image_id)


async def _setup_api(api: ApiClient, guest: tinyguest.TinyGuest) -> tuple[dict[str, str], str, str]:
    kernel = await _upload(api, "tiny-kernel", guest.kernel, "aki")
    ramdisk = await _upload(api, "tiny-ramdisk", guest.initrd, "ari")
    common = {"kernel_id": kernel, "ramdisk_id": ramdisk}
    images = {
        "tiny": await _upload(api, "tiny", guest.disk, "qcow2", os_command_line=tinyguest.CMDLINE, **common),
        "deaf": await _upload(api, "tiny-ignores-acpi", guest.disk, "qcow2",
                              os_command_line=tinyguest.CMDLINE + " canopy.ignore_acpi", **common),
        "growing": await _upload(api, "tiny-grown-by-host", guest.disk, "qcow2", canopy_grow_fs="host",
                                 os_command_line=tinyguest.CMDLINE, **common),
        "ticking": await _upload(api, "tiny-ticking", guest.disk, "qcow2",
                                 os_command_line=tinyguest.CMDLINE + " canopy.tick", **common),
    }
    resp = await api.post("/compute/v2.1/flavors", headers=V, json={"flavor": {
        "name": "tiny.real", "vcpus": 1, "ram": 256, "disk": 1}})
    assert resp.status_code == 200, resp.text
    flavor = resp.json()["flavor"]["id"]
    resp = await api.post("/network/v2.0/networks", json={"network": {"name": "guestnet", "shared": True}})
    assert resp.status_code == 201, resp.text
    network = resp.json()["network"]["id"]
    resp = await api.post("/network/v2.0/subnets", json={"subnet": {
        "network_id": network, "ip_version": 4, "cidr": "198.51.100.0/24", "gateway_ip": "198.51.100.1",
        "dns_nameservers": ["192.0.2.53"]}})
    assert resp.status_code == 201, resp.text
    resp = await api.post("/compute/v2.1/os-keypairs", headers=V, as_user="demo",
                          json={"keypair": {"name": "canopy-test", "public_key": SSH_KEY}})
    assert resp.status_code in (200, 201), resp.text  # 201 from microversion 2.2
    return images, flavor, network


@pytest.fixture(scope="module")
async def real(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealCloud]:
    """An all-in-one whose only hypervisor is this machine's libvirt (qemu:///system)."""
    from canopy.allinone import AllInOne
    from canopy.api.app import build_app

    try:
        guest = tinyguest.build()
        local = tinyguest.ensure_libvirt()
    except tinyguest.GuestUnavailable as exc:
        pytest.skip(f"no real guest on this machine: {exc}")
    # QEMU runs as libvirt-qemu: its files must be reachable, and pytest's temp folders are 0700
    instances = Path(tempfile.mkdtemp(prefix="canopy-test-", dir="/var/tmp"))
    instances.chmod(0o755)
    settings = make_settings(tmp_path_factory.mktemp("realcloud"))
    port = _free_port()
    settings.api.port, settings.api.public_url = port, f"http://127.0.0.1:{port}"
    settings.conductor.stop_timeout_s = 4.0
    settings.agent.power_sync_s = 1.0
    lv = settings.libvirt
    lv.instances_path = instances
    lv.accel_probe_kernel, lv.accel_probe_initrd = guest.kernel, guest.initrd
    lv.accel_probe_cmdline, lv.accel_probe_marker = tinyguest.CMDLINE + " canopy.probe", tinyguest.PROBE_MARKER
    lv.accel_probe_timeout_s = 10.0
    lv.shutdown_retry_s = 2.0
    aio = AllInOne(settings, hosts=0, serve_http=True)
    await aio.start()
    api = ApiClient(build_app(aio.cloud))
    net = RecordingNet()
    cloud = RealCloud(aio, api, settings, {}, net)
    try:
        cloud.images, cloud.flavor, cloud.network = await _setup_api(api, guest)
        await cloud.start_agent()
        yield cloud
    finally:
        if cloud.agent is not None:
            for uuid in list(await cloud.driver.guest_states()):
                await cloud.driver.destroy(uuid)
            await cloud.agent.stop()
        await api.http.aclose()
        await aio.stop()
        local.stop()
        shutil.rmtree(instances, ignore_errors=True)


async def boot(real: RealCloud, image: str, name: str) -> str:
    resp = await real.api.post("/compute/v2.1/servers", headers=V, as_user="demo", json={"server": {
        "name": name, "imageRef": real.images[image], "flavorRef": real.flavor, "key_name": "canopy-test",
        "networks": [{"uuid": real.network}], "user_data": "ZWNobyBoZWxsbw=="}})
    assert resp.status_code == 202, resp.text
    sid = str(resp.json()["server"]["id"])
    await wait_for_server(real.api, sid, {"ACTIVE", "ERROR"}, timeout=120)
    return sid


async def console(real: RealCloud, sid: str, length: int | None = None) -> str:
    body = {"os-getConsoleOutput": {"length": length} if length else {}}
    resp = await real.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, as_user="demo", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["output"])


async def wait_console(real: RealCloud, sid: str, text: str, count: int = 1, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = await console(real, sid)
        if out.count(text) >= count:
            return out
        await asyncio.sleep(0.3)
    raise AssertionError(f"{text!r} x{count} never appeared on the console of {sid}; it shows:\n{out[-2000:]}")


async def act(real: RealCloud, sid: str, body: dict[str, Any]) -> None:
    resp = await real.api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, as_user="demo", json=body)
    assert resp.status_code == 202, resp.text


async def show(real: RealCloud, sid: str) -> dict[str, Any]:
    return dict((await real.api.get(f"/compute/v2.1/servers/{sid}", headers=V)).json()["server"])


@pytest.fixture(scope="module")
async def web(real: RealCloud) -> str:
    sid = await boot(real, "tiny", "web-1")
    server = await show(real, sid)
    assert server["status"] == "ACTIVE", server.get("fault")
    await wait_console(real, sid, tinyguest.MARKER)
    return sid


async def test_accelerator_detected_by_booting(real: RealCloud) -> None:
    """libvirt offers KVM here, but stock kernels hang on this nested KVM: the probe finds out, TCG it is."""
    info = real.driver.host_info()
    assert info.accelerator in ("kvm", "tcg")
    if real.driver.facts.offers_kvm and info.accelerator == "tcg":
        assert (real.settings.libvirt.instances_path / "accel.json").exists()
    hyper = (await real.api.get("/compute/v2.1/os-hypervisors/detail", headers=V)).json()["hypervisors"]
    mine = next(h for h in hyper if h["hypervisor_hostname"] == HOST)
    assert mine["hypervisor_type"] == "QEMU" and mine["hypervisor_version"] >= 7000000
    assert mine["cpu_info"]["accelerator"] == info.accelerator
    assert mine["vcpus"] >= 1 and mine["memory_mb"] > 1024 and mine["local_gb"] > 0


async def test_guest_reads_its_config_drive(real: RealCloud, web: str) -> None:
    out = await console(real, web)
    ip = (await show(real, web))["addresses"]["guestnet"][0]["addr"]
    assert "CANOPY-HOSTNAME=web-1" in out
    assert f"CANOPY-IP={ip}" in out and ip.startswith("198.51.100.")
    assert "CANOPY-GATEWAY=198.51.100.1" in out and "CANOPY-DNS=192.0.2.53" in out
    assert f"CANOPY-SSH-KEY={SSH_KEY}" in out
    assert "CANOPY-ROOTFS=canopy tiny guest disk" in out  # the qcow2 overlay reads through to its base
    assert (await console(real, web, 1)).count("\n") <= 1


async def test_stop_soft_is_the_guests_own_shutdown(real: RealCloud, web: str) -> None:
    await act(real, web, {"canopy-stopSoft": {"timeout": 60}})
    server = await wait_for_server(real.api, web, {"SHUTOFF"}, timeout=70)
    assert server["OS-EXT-STS:power_state"] == PowerState.SHUTDOWN
    assert "CANOPY-POWEROFF" in await console(real, web)
    assert (await real.driver.guest_states())[web].reason == "shutdown"
    boots = (await console(real, web)).count(tinyguest.MARKER)
    await act(real, web, {"os-start": None})
    await wait_for_server(real.api, web, {"ACTIVE"}, timeout=60)
    await wait_console(real, web, tinyguest.MARKER, boots + 1)


async def test_guest_ignoring_acpi(real: RealCloud) -> None:
    deaf = await boot(real, "deaf", "deaf-1")
    await wait_console(real, deaf, "CANOPY-IGNORING-ACPI")
    # stop_soft: only ACPI, so it fails after its timeout with a fault, and the guest keeps running
    await act(real, deaf, {"canopy-stopSoft": {"timeout": 3}})
    await asyncio.sleep(0.5)
    server = await wait_for_server(real.api, deaf, {"ACTIVE"}, timeout=30)
    while server["OS-EXT-STS:task_state"] is not None:
        await asyncio.sleep(0.2)
        server = await show(real, deaf)
    assert server["status"] == "ACTIVE" and server["fault"]["code"] == 500
    assert "ignored the shutdown request" in server["fault"]["message"]
    assert await real.driver.power_state(deaf) == PowerState.RUNNING
    # os-stop: clean shutdown first, then the hard fallback
    await act(real, deaf, {"os-stop": None})
    await wait_for_server(real.api, deaf, {"SHUTOFF"}, timeout=30)
    assert (await real.driver.guest_states())[deaf].reason == "destroyed"
    actions = (await real.api.get(f"/compute/v2.1/servers/{deaf}/os-instance-actions", headers=V)).json()
    stop_req = next(a for a in actions["instanceActions"] if a["action"] == "stop")["request_id"]
    events = (await real.api.get(f"/compute/v2.1/servers/{deaf}/os-instance-actions/{stop_req}",
                                 headers=V)).json()["instanceAction"]["events"]
    assert [(e["event"], e["result"]) for e in events] == [("compute_clean_shutdown", "Timeout"),
                                                           ("compute_hard_power_off", "Success")]
    # canopy-stopHard: immediate power-off
    await act(real, deaf, {"os-start": None})
    await wait_for_server(real.api, deaf, {"ACTIVE"}, timeout=30)
    await wait_console(real, deaf, "CANOPY-IGNORING-ACPI", 2)
    t0 = time.monotonic()
    await act(real, deaf, {"canopy-stopHard": None})
    await wait_for_server(real.api, deaf, {"SHUTOFF"}, timeout=30)
    assert time.monotonic() - t0 < 10
    await act(real, deaf, {"os-start": None})
    await wait_for_server(real.api, deaf, {"ACTIVE"}, timeout=30)


async def test_reboot_hard_prints_the_marker_again(real: RealCloud, web: str) -> None:
    await wait_console(real, web, tinyguest.MARKER)
    boots = (await console(real, web)).count(tinyguest.MARKER)
    await act(real, web, {"reboot": {"type": "HARD"}})
    await wait_for_server(real.api, web, {"ACTIVE"}, timeout=60)
    await wait_console(real, web, tinyguest.MARKER, boots + 1)


async def test_reboot_soft_and_its_hard_fallback(real: RealCloud, web: str) -> None:
    boots = (await console(real, web)).count(tinyguest.MARKER)
    await act(real, web, {"reboot": {"type": "SOFT"}})
    await wait_console(real, web, tinyguest.MARKER, boots + 1)
    assert "CANOPY-POWEROFF" in (await console(real, web)).split(tinyguest.MARKER)[-2]  # it shut itself down
    await wait_for_server(real.api, web, {"ACTIVE"}, timeout=60)
    # a guest that ignores ACPI is rebooted hard once the soft reboot's time is up
    listed = await real.api.get("/compute/v2.1/servers?name=deaf-1", headers=V, as_user="demo")
    deaf = listed.json()["servers"][0]["id"]
    boots = (await console(real, deaf)).count(tinyguest.MARKER)
    await act(real, deaf, {"reboot": {"type": "SOFT"}})
    await wait_console(real, deaf, tinyguest.MARKER, boots + 1)
    server = await wait_for_server(real.api, deaf, {"ACTIVE"}, timeout=60)
    while server["OS-EXT-STS:task_state"] is not None:
        await asyncio.sleep(0.2)
        server = await show(real, deaf)
    actions = (await real.api.get(f"/compute/v2.1/servers/{deaf}/os-instance-actions", headers=V)).json()
    req = next(a for a in actions["instanceActions"] if a["action"] == "reboot")["request_id"]
    events = (await real.api.get(f"/compute/v2.1/servers/{deaf}/os-instance-actions/{req}",
                                 headers=V)).json()["instanceAction"]["events"]
    assert [(e["event"], e["result"]) for e in events] == [("compute_soft_reboot", "Error"),
                                                           ("compute_hard_reboot", "Success")]


async def test_pause_and_suspend_a_real_guest(real: RealCloud, web: str) -> None:
    for action, status in (("pause", "PAUSED"), ("unpause", "ACTIVE"), ("suspend", "SUSPENDED"),
                           ("resume", "ACTIVE")):
        await act(real, web, {action: None})
        await wait_for_server(real.api, web, {status}, timeout=90)
    assert await real.driver.power_state(web) == PowerState.RUNNING


async def _domain_ids(real: RealCloud) -> dict[str, int]:
    out = {}
    for uuid in await real.driver.guest_states():
        dom = await real.driver.hv.dom(uuid)
        out[uuid] = dom.ID()
    return out


def _tap_of(port_id: str) -> bool:
    return Path("/sys/class/net", tap_name(port_id)).exists()


async def test_agent_restart_and_host_reboot(real: RealCloud, web: str) -> None:
    ports = (await real.api.get(f"/network/v2.0/ports?device_id={web}")).json()["ports"]
    before = await _domain_ids(real)
    assert before[web] > 0
    # the agent restarts while guests run: nothing is restarted or lost
    await real.stop_agent()
    real.net.plugged.clear()
    await real.start_agent()
    report = real.agent.reconcile_report
    assert report.started == [] and report.missing == [] and report.unknown == []
    assert await _domain_ids(real) == before
    assert _tap_of(ports[0]["id"])
    assert real.net.plugged and all(exists for _, _, exists in real.net.plugged)
    assert not (await real.agent.reconciler.reconcile()).changed

    # the host reboots: QEMU and the taps are gone, the agent starts again
    boots = (await console(real, web)).count(tinyguest.MARKER)
    await real.stop_agent()
    for uuid in before:
        dom = await real.driver.hv.dom(uuid)
        if dom.isActive():
            dom.destroy()
    subprocess.run(["ip", "link", "del", "dev", tap_name(ports[0]["id"])], check=True)
    real.net.plugged.clear()
    reapplied = real.net.reapplied
    await real.start_agent()
    report = real.agent.reconcile_report
    assert web in report.started
    assert _tap_of(ports[0]["id"])
    assert all(exists for _, _, exists in real.net.plugged)  # each tap existed before it was plugged
    assert real.net.reapplied == reapplied + 1
    await wait_console(real, web, tinyguest.MARKER, boots + 1)
    second = await real.agent.reconciler.reconcile()
    assert not second.changed and second.started == []
    assert (await show(real, web))["status"] == "ACTIVE"


async def test_power_sync_sees_a_guest_that_died(real: RealCloud) -> None:
    victim = await boot(real, "tiny", "victim")
    await wait_console(real, victim, tinyguest.MARKER)
    qemu = subprocess.run(["pgrep", "-f", f"guest=canopy-{victim}"], capture_output=True, text=True).stdout.split()
    assert len(qemu) == 1, qemu
    subprocess.run(["kill", "-9", qemu[0]], check=True)
    server = await wait_for_server(real.api, victim, {"SHUTOFF"}, timeout=30)
    assert "Guest died" in server["fault"]["message"], server
    assert re.search(r"reason (crashed|failed|unknown|shutdown|destroyed)", server["fault"]["message"])
    resp = await real.api.delete(f"/compute/v2.1/servers/{victim}", as_user="demo")
    assert resp.status_code == 204
    await wait_for_server(real.api, victim, {"DELETED"}, timeout=30)
    assert victim not in await real.driver.guest_states()
    assert not real.driver.instance_dir(victim).exists()
