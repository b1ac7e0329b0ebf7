# ruff: noqa: F811  (the shared fixture `real` is imported, then named as a test parameter)
"""Real guests on a real switch: the libvirt agent's network node programs a private Open vSwitch
(userspace datapath, the guests' kernel taps as its ports) with the flows the conductor sends, and the
tiny guests talk through it: a guest reaches another by its own address; one that takes an address it
was not given gets nothing through. Skipped with the reason where libvirt/QEMU are missing."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from canopy.agent.net.applier import OvsApplier
from canopy.agent.net.node import NetNode
from canopy.agent.virt.vif import tap_name
from tests.clouds import wait_for_server
from tests.integration.ovs_support import start_private_ovs
from tests.integration.test_real_guest import HOST, RealCloud, real, wait_console  # noqa: F401

V = {"OpenStack-API-Version": "compute 2.87"}


@pytest.fixture(scope="module")
async def switched(real: RealCloud) -> AsyncIterator[Any]:
    """The agent restarted with a network node on a private Open vSwitch of this module's own."""
    ovs_gen = start_private_ovs()
    ovs = next(ovs_gen)
    bridge = f"brg-{uuid.uuid4().hex[:6]}"
    try:
        await real.stop_agent()
        real.node = NetNode(HOST, OvsApplier(bridge, rundir=ovs.rundir, datapath_type="netdev", tap_type="system"))
        real.net = None  # the reconciler plugs and reapplies through that node
        await real.start_agent()
        yield ovs, bridge
    finally:
        for sid in list(await real.driver.guest_states()):
            await real.driver.destroy(sid)
        ovs_gen.close()


async def boot(real: RealCloud, name: str, meta: dict[str, str]) -> str:
    resp = await real.api.post("/compute/v2.1/servers", headers=V, as_user="demo", json={"server": {
        "name": name, "imageRef": real.images["tiny"], "flavorRef": real.flavor, "key_name": "canopy-test",
        "networks": [{"uuid": real.network}], "metadata": meta}})
    assert resp.status_code == 202, resp.text
    sid = str(resp.json()["server"]["id"])
    s = await wait_for_server(real.api, sid, {"ACTIVE", "ERROR"}, timeout=120)
    assert s["status"] == "ACTIVE", s
    return sid


async def test_guests_talk_through_the_switch_and_a_spoofer_gets_nothing(real: RealCloud, switched: Any) -> None:
    ovs, bridge = switched
    a = await boot(real, "net-a", {"canopy_net": "up"})
    ip_a = re.findall(r"CANOPY-NET-UP=(\S+)", await wait_console(real, a, "CANOPY-BOOTED"))[-1]
    b = await boot(real, "net-b", {"canopy_net": "up", "canopy_ping": ip_a})
    out = await wait_console(real, b, "CANOPY-BOOTED", timeout=120)
    assert f"CANOPY-PING={ip_a}:ok" in out, out[-1500:]
    # a guest that takes an address it was not given (the gateway's, which no port is ever given):
    # nothing leaves its port
    stolen = "198.51.100.1"
    c = await boot(real, "net-c", {"canopy_net": "up", "canopy_ip": stolen, "canopy_ping": ip_a})
    out = await wait_console(real, c, "CANOPY-BOOTED", timeout=120)
    assert f"CANOPY-NET-UP={stolen}" in out and f"CANOPY-PING={ip_a}:fail" in out, out[-1500:]
    own = (await real.api.get(f"/network/v2.0/ports?device_id={c}")).json()["ports"][0]["fixed_ips"][0]
    assert own["ip_address"] != stolen
    ports = ovs.vsctl("list-ports", bridge).split()
    for sid in (a, b, c):  # each guest's tap is a port of the switch: the only way between them
        port = (await real.api.get(f"/network/v2.0/ports?device_id={sid}")).json()["ports"][0]
        assert tap_name(port["id"]) in ports, (sid, ports)
