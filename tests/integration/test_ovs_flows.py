"""The compiled flows on a real Open vSwitch (private instance, userspace `dummy` datapath): every rule
family of the compiler's table tests, traced with `ovs-appctl ofproto/trace` — the legitimate packet
reaches the right port, each spoofed one is dropped. Then the applier's own promises: replace-flows of
an unchanged program changes nothing, a diff is one bundle, wiring is idempotent."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from canopy.agent.net import tables as t
from canopy.agent.net.applier import OvsApplier, Tap
from canopy.agent.net.compiler import compile_host
from canopy.agent.net.model import Program, diff_programs
from canopy.agent.net.privateovs import PrivateOvs
from tests import packet_tables as cases
from tests.integration.ovs_support import odp_ports, start_private_ovs, top_level_ports

BRIDGE = "br-t"
NIC = "nic-public"


@pytest.fixture(scope="module")
def ovs() -> Iterator[PrivateOvs]:
    yield from start_private_ovs()


def taps_of(ports: Any) -> list[Tap]:
    return [Tap(p.id, t.tap_name(p.id), p.ofport, p.mac) for p in ports]


@pytest.fixture(scope="module")
async def programmed(ovs: PrivateOvs) -> tuple[OvsApplier, Program]:
    """The compiler tests' host state on a real bridge: taps, uplink (with a NIC behind it), tunnel port."""
    applier = OvsApplier(BRIDGE, rundir=ovs.rundir, datapath_type="dummy", tap_type="dummy")
    await applier.setup({"public": cases.UPLINK}, cases.STATE.tunnel_ip)
    ovs.vsctl("--may-exist", "add-port", "br-public", NIC, "--", "set", "Interface", NIC, "type=dummy")
    wired = await applier.wire(taps_of(cases.STATE.ports))
    assert sorted(wired) == sorted(p.id for p in cases.STATE.ports)
    program = compile_host(cases.STATE)
    await applier.replace(program)
    return applier, program


def traced_ports(ovs: PrivateOvs, packet: str) -> list[int]:
    """Where Open vSwitch sends a packet, as integration-bridge OpenFlow ports (the uplink's NIC counts
    as the uplink port; a packet from the uplink is injected on the NIC, through the physical bridge)."""
    fields = dict(p.split("=", 1) if "=" in p else (p, "") for p in packet.split(","))
    bridge = BRIDGE
    if fields["in_port"] == str(cases.UPLINK):
        bridge, packet = "br-public", packet.replace(f"in_port={cases.UPLINK}", f"in_port={NIC}", 1)
    actions, text = ovs.trace(bridge, packet)
    names = odp_ports(ovs)
    out = []
    for odp in top_level_ports(actions):
        name, ofport = names[odp]
        if name == NIC:
            out.append(cases.UPLINK)
        elif name != "br-public":  # the physical bridge's own port gets NORMAL's flood: not ours
            out.append(ofport)
    return sorted(out)


FAMILIES = {"mac_ipv4": cases.MAC_AND_IPV4, "arp": cases.ARP, "ipv6": cases.IPV6, "dhcp": cases.DHCP,
            "snooping": cases.SNOOPING, "pairs": cases.PAIRS_AND_OPEN_PORT}


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_rule_family_on_open_vswitch(ovs: PrivateOvs, programmed: Any, family: str) -> None:
    wrong = []
    for name, packet, want in FAMILIES[family]:
        got = traced_ports(ovs, packet)
        if got != sorted(want):
            wrong.append(f"{name}: wanted {sorted(want)}, got {got}")
    assert not wrong, "\n".join(wrong)


async def test_arp_responder_reply_on_open_vswitch(ovs: PrivateOvs, programmed: Any) -> None:
    actions, _ = ovs.trace(BRIDGE, cases.arp(100, cases.A.mac, "203.0.113.10", "203.0.113.11"))
    assert f"eth(src={cases.B.mac},dst={cases.A.mac})" in actions
    assert "sip=203.0.113.11,tip=203.0.113.10,op=2" in actions and f"sha={cases.B.mac}" in actions


async def test_vxlan_on_open_vswitch(ovs: PrivateOvs, programmed: Any) -> None:
    # The dummy datapath has no route to 192.0.2.0/24, so read the OpenFlow half of the trace.
    _, text = ovs.trace(BRIDGE, cases.ip4(110, cases.V.mac, cases.W.mac, "10.0.0.10", "10.0.0.20"))
    assert "set_field:0x1389->tun_id" in text and "set_field:192.0.2.2->tun_dst" in text
    assert "output:1" in text and "-> output to native tunnel" in text
    _, text = ovs.trace(BRIDGE, cases.ip4(110, cases.V.mac, cases.BCAST, "10.0.0.10"))
    assert text.count("-> output to native tunnel") == 2
    inbound = (f"in_port=1,tun_id=5001,ip,dl_src={cases.W.mac},dl_dst={cases.V.mac},nw_src=10.0.0.20,"
               "nw_dst=10.0.0.10")
    actions, _ = ovs.trace(BRIDGE, inbound)
    assert [odp_ports(ovs)[p][1] for p in top_level_ports(actions)] == [110]
    assert ovs.trace(BRIDGE, inbound.replace("tun_id=5001", "tun_id=5002"))[0] == "drop"


async def test_meters_are_installed_and_used(ovs: PrivateOvs, programmed: Any) -> None:
    applier, program = programmed
    assert await applier.dump_meters() == program.meters
    actions, _ = ovs.trace(BRIDGE, cases.ip4(104, cases.Q.mac, cases.A.mac, "203.0.113.15", "203.0.113.10"))
    assert actions.startswith("meter(")


async def test_switch_holds_exactly_the_program(ovs: PrivateOvs, programmed: Any, tmp_path: Any) -> None:
    _, program = programmed
    listing = tmp_path / "flows.txt"
    listing.write_text("\n".join(program.lines()) + "\n")
    assert ovs.ofctl("diff-flows", BRIDGE, str(listing)) == ""
    assert all(f"cookie={t.COOKIE_CANOPY >> 48:#x}" in line for line in ovs.ofctl("dump-flows", BRIDGE).splitlines()
               if "priority" in line)


async def test_reload_and_rewire_change_nothing(ovs: PrivateOvs, programmed: Any) -> None:
    applier, program = programmed
    before = ovs.ofctl("dump-flows", BRIDGE)  # with durations: a re-added flow starts again at 0
    ports_before = ovs.vsctl("--columns=_uuid,name,ofport", "list", "Interface")
    await applier.replace(program)
    await applier.wire(taps_of(cases.STATE.ports))
    after = ovs.ofctl("dump-flows", BRIDGE)
    assert _durations(after) and min(_durations(after)) >= min(_durations(before))
    assert ovs.vsctl("--columns=_uuid,name,ofport", "list", "Interface") == ports_before


def _durations(dump: str) -> list[float]:
    return [float(part.split("=")[1].rstrip("s,")) for line in dump.splitlines() for part in line.split()
            if part.startswith("duration=")]


async def test_one_port_change_is_one_bundle_of_adds_and_strict_deletes(ovs: PrivateOvs, programmed: Any,
                                                                        tmp_path: Any) -> None:
    applier, program = programmed
    a2 = dataclasses.replace(cases.A, ipv4=("203.0.113.10", "203.0.113.20"))
    changed = compile_host(dataclasses.replace(cases.STATE, ports=(a2, *cases.STATE.ports[1:])))
    await applier.change(diff_programs(program, changed))
    assert traced_ports(ovs, cases.ip4(100, a2.mac, cases.B.mac, "203.0.113.20", "203.0.113.11")) == [101]
    await applier.change(diff_programs(changed, program))
    assert traced_ports(ovs, cases.ip4(100, a2.mac, cases.B.mac, "203.0.113.20", "203.0.113.11")) == []
    listing = tmp_path / "flows.txt"
    listing.write_text("\n".join(program.lines()) + "\n")
    assert ovs.ofctl("diff-flows", BRIDGE, str(listing)) == ""


async def test_wiring_adds_only_existing_taps_and_removes_stale_ones(ovs: PrivateOvs) -> None:
    # The taps "exist" in a namespace of the test's own (a dummy link), which the applier is told to
    # look in; Open vSwitch itself never opens them.
    netns = f"canopy-wire-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "add", "tapexists00000", "type", "veth", "peer", "name",
                        "tapexists-peer"], check=True)
        applier = OvsApplier("br-w", rundir=ovs.rundir, datapath_type="dummy", tap_type="system", netns=netns)
        await applier.setup({}, None)
        ovs.vsctl("add-port", "br-w", "tapstale000000", "--", "set", "Interface", "tapstale000000", "type=dummy",
                  "external_ids:canopy-bridge=br-w", "external_ids:iface-id=gone")
        present = Tap("p-here", "tapexists00000", 300, "fa:16:3e:00:01:00")
        missing = Tap("p-missing", "tapnotthere000", 301, "fa:16:3e:00:01:01")
        assert await applier.wire([present, missing]) == ["p-here"]
        assert await applier.wired_taps() == {"tapexists00000": (300, "p-here")}
        moved = dataclasses.replace(present, ofport=302)
        await applier.wire([moved])
        assert await applier.wired_taps() == {"tapexists00000": (302, "p-here")}
        assert await applier.wire([]) == [] and await applier.wired_taps() == {}
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)


async def test_meters_in_bulk_over_one_openflow_connection(ovs: PrivateOvs) -> None:
    from canopy.agent.net import ofmeter
    from canopy.agent.net.model import Meter

    applier = OvsApplier("br-m", rundir=ovs.rundir, datapath_type="dummy", tap_type="dummy")
    await applier.setup({}, None)
    meters = {i: Meter.limiting(i, 1000 + i) for i in range(2, 302)}
    await applier.replace(Program(flows={}, meters=meters))
    assert await applier.dump_meters() == meters
    await applier.replace(Program(flows={}, meters={2: Meter.limiting(2, 5000)}))
    assert await applier.dump_meters() == {2: Meter.limiting(2, 5000)}
    with pytest.raises(ofmeter.MeterError, match="OpenFlow error"):  # adding a meter that exists
        await ofmeter.apply_meters(applier.mgmt_socket(), [(ofmeter.OFPMC_ADD, Meter.limiting(2, 1)),
                                                           (ofmeter.OFPMC_ADD, Meter.limiting(3, 1))])
