"""Security groups on a real Open vSwitch (private instance, `dummy` datapath): the compiler's rule
families traced with `ofproto/trace` (a connection's first packet: conntrack says +new), so the flows
Open vSwitch takes — conntrack zones, conjunctive matches, masked port ranges — decide as the fake
switch does. Real packets through real conntrack are in test_ovs_secgroup_packets.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from canopy.agent.net import tables as t
from canopy.agent.net.applier import OvsApplier, Tap
from canopy.agent.net.compiler import compile_host
from canopy.agent.net.privateovs import PrivateOvs
from tests.integration.ovs_support import odp_ports, start_private_ovs, top_level_ports
from tests.unit import test_secgroup_compiler as cases

BRIDGE = "br-sg"
NIC = "nic-sg"


@pytest.fixture(scope="module")
def ovs() -> Iterator[PrivateOvs]:
    yield from start_private_ovs()


@pytest.fixture(scope="module")
async def programmed(ovs: PrivateOvs) -> OvsApplier:
    applier = OvsApplier(BRIDGE, rundir=ovs.rundir, datapath_type="dummy", tap_type="dummy")
    await applier.setup({"public": cases.UPLINK}, None)
    ovs.vsctl("--may-exist", "add-port", "br-public", NIC, "--", "set", "Interface", NIC, "type=dummy")
    await applier.wire([Tap(p.id, t.tap_name(p.id), p.ofport, p.mac) for p in cases.STATE.ports])
    await applier.replace(compile_host(cases.STATE))
    return applier


def traced_ports(ovs: PrivateOvs, packet: str) -> list[int]:
    """Where Open vSwitch sends a packet, as integration-bridge ports (the NIC stands for the uplink)."""
    bridge = BRIDGE
    if packet.startswith(f"in_port={cases.UPLINK},"):
        bridge, packet = "br-public", packet.replace(f"in_port={cases.UPLINK}", f"in_port={NIC}", 1)
    _, text = ovs.trace(bridge, packet)
    # after conntrack the trace resumes (recirculation): the last datapath actions are the verdict
    actions = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Datapath actions:")][-1]
    names = odp_ports(ovs)
    out = []
    for odp in top_level_ports(actions):
        name, ofport = names[odp]
        if name == NIC:
            out.append(cases.UPLINK)
        elif name != "br-public":
            out.append(ofport)
    return sorted(out)


FAMILIES = {"protocol_prefix": cases.PROTOCOL_AND_PREFIX, "port_range": cases.PORT_RANGE, "icmp": cases.ICMP,
            "ipv6": cases.IPV6, "remote_group": cases.REMOTE_GROUP,
            # ofproto/trace does not run conntrack: the "invalid" case is for real packets
            "ports": [c for c in cases.PORTS if "invalid" not in c[0]]}


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_rule_family_on_open_vswitch(ovs: PrivateOvs, programmed: Any, family: str) -> None:
    wrong = []
    for name, packet, want in FAMILIES[family]:
        got = traced_ports(ovs, packet)
        if got != sorted(want):
            wrong.append(f"{name}: wanted {sorted(want)}, got {got}")
    assert not wrong, "\n".join(wrong)


async def test_the_bridge_holds_the_compiled_firewall(ovs: PrivateOvs, programmed: Any) -> None:
    dumped = ovs.ofctl("dump-flows", BRIDGE)
    assert "conjunction(105,1/2)" in dumped and "conj_id=105" in dumped
    assert "ct(commit,zone=NXM_NX_REG1[0..15],exec(move:NXM_NX_REG2[]->NXM_NX_CT_MARK[]))" in dumped
    assert len([line for line in dumped.splitlines() if "cookie=" in line]) == len(compile_host(cases.STATE).flows)
