"""`canopy network trace` explains drops in the words of the rule that decided; `canopy network flows`
prints exactly what the host's agent applied, with the port numbering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from canopy.agent.net.compiler import compile_host
from canopy.agent.net.trace import explain
from tests import packet_tables as cc
from tests.clouds import boot_port as boot
from tests.clouds import node_of, ping

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = compile_host(cc.STATE)

REASONS = [
    (cc.ip4(100, cc.B.mac, "02:00:00:00:00:01", "203.0.113.10"), f"source MAC {cc.B.mac} is not the port's"),
    (cc.ip4(100, cc.A.mac, cc.B.mac, "203.0.113.11"), "source IP 203.0.113.11 is not one of the port's addresses"),
    (cc.arp(100, cc.A.mac, "203.0.113.11", "203.0.113.1"), "ARP sender address 203.0.113.11 is not one of"),
    (f"in_port=100,arp,dl_src={cc.A.mac},dl_dst={cc.BCAST},arp_op=1,arp_sha={cc.B.mac},arp_spa=203.0.113.10,"
     "arp_tpa=203.0.113.1", "ARP sender hardware address"),
    (cc.icmp6(100, cc.A.mac, cc.B.mac, "2001:db8::b", "2001:db8::b", 128), "IPv6 source 2001:db8::b is not"),
    (cc.icmp6(100, cc.A.mac, "33:33:00:00:00:01", "2001:db8::a", "ff02::1", 136, "2001:db8::b"),
     "neighbour advertisement for 2001:db8::b"),
    (cc.icmp6(100, cc.A.mac, "33:33:00:00:00:01", "fe80::1", "ff02::1", 134), "router advertisements"),
    (f"in_port=100,udp,dl_src={cc.A.mac},dl_dst={cc.BCAST},nw_src=203.0.113.10,nw_dst=255.255.255.255,"
     "udp_src=67,udp_dst=68", "DHCP server"),
    (cc.ip4(cc.UPLINK, "02:00:00:00:00:01", "fa:16:3e:77:77:77", "198.51.100.1"), "unknown unicast is never flooded"),
    (cc.arp(cc.UPLINK, "02:00:00:00:00:01", "203.0.113.1", "203.0.113.99"), "no port on this host holds"),
    (cc.ip4(105, cc.E.mac, cc.A.mac, "203.0.113.30"), "administratively down"),
    (cc.ip4(999, cc.A.mac, cc.B.mac, "203.0.113.10"), "in_port 999 is not a VM port"),
    (f"in_port=100,dl_src={cc.A.mac},dl_dst={cc.B.mac},dl_type=0x88cc", "ethertype 0x88cc"),
]


@pytest.mark.parametrize(("packet", "reason"), REASONS)
def test_drop_reasons(packet: str, reason: str) -> None:
    out = explain(PROGRAM, packet)
    assert out.verdict.startswith("dropped: ") and reason in out.verdict, out.text()


def test_a_forwarded_packet_names_its_port_and_each_table() -> None:
    out = explain(PROGRAM, cc.ip4(100, cc.A.mac, cc.B.mac, "203.0.113.10", "203.0.113.11"))
    assert out.verdict == "output to 101 (port-b)"
    text = out.text()
    assert "table 0 (classify)" in text and "table 10 (port_security)" in text and "table 60 (deliver)" in text
    assert explain(PROGRAM, cc.ip4(100, cc.A.mac, "02:00:00:00:00:01", "203.0.113.10")).verdict == \
        f"output to {cc.UPLINK} (uplink)"


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "canopy.cli", "network", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_cli_flows_match_the_agent_and_trace_explains(stack: Any) -> None:
    a = await boot(stack, "a", "admin", availability_zone="nova:hv-0001")
    b = await boot(stack, "b", "admin", availability_zone="nova:hv-0001")
    data_dir = str(stack.settings.data_dir)
    out = _cli("flows", "hv-0001", "--data-dir", data_dir)
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert lines == node_of(stack, "hv-0001").program.lines()
    ofport = a["binding:vif_details"]["ofport"]
    assert f"# port {a['id']} mac {a['mac_address']} ips {a['fixed_ips'][0]['ip_address']} -> ofport {ofport}" in out
    assert "# uplink public -> ofport" in out
    spoof = ping(a, b, src_ip=b["fixed_ips"][0]["ip_address"])
    traced = _cli("trace", "hv-0001", spoof, "--data-dir", data_dir)
    assert "verdict: dropped: source IP" in traced
