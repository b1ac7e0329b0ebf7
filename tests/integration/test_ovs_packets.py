"""Real packets through the compiled flows on real Open vSwitches (`netdev` datapath, one ovs-vswitchd per
simulated host, each in a network namespace of the test's own): three customers' servers (network
namespaces with veth pairs, MACs and addresses from 203.0.113.0/24) on two hosts — A on the first, B and C
on the second — whose physical bridges meet a router on one L2 segment (a Linux bridge). Each host's flows
are compiled from its own ports only, with no ARP responder (the flat network's default): a guest's ARP
request reaches the owner of the address, on whichever host, and the owner answers.

- the servers of two projects ping each other across hosts, and the router;
- a server that takes another's IP, changes its MAC or sends forged ARP gets nothing through, and no
  neighbour cache (the victim's, the router's) is poisoned;
- a promiscuous listener sees no unicast meant for others.
Counters are read after `ovs-appctl revalidator/wait`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from canopy.agent.net import tables as t
from canopy.agent.net.applier import OvsApplier, Tap
from canopy.agent.net.compiler import compile_host
from canopy.agent.net.model import HostNetState, Segment, VmPort
from canopy.agent.net.privateovs import PrivateOvs, ovs_installed

UPLINK = 7
SEG = Segment("public", None, "flat", t.network_key("flat", UPLINK, None), uplink=UPLINK, physical_network="public",
              arp_responder=False)
ROUTER_MAC, ROUTER_IP = "02:00:00:00:00:01", "203.0.113.1"


@dataclass
class Vm:
    name: str
    ns: str
    mac: str
    ip: str
    port: VmPort


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@dataclass
class Lab:
    ovs: dict[str, PrivateOvs]  # host -> its switch
    router_ns: str
    vms: dict[str, Vm]
    host_of: dict[str, str]  # vm name -> its host

HOSTS = {"h1": ("a",), "h2": ("b", "c")}


def _veth(ovs_ns: str, tap: str, ns: str, mac: str, ip: str) -> None:
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ovs_ns, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
    sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    for cmd in (("ip", "-n", ns, "link", "set", "lo", "up"), ("ip", "-n", ns, "link", "set", "eth0", "up"),
                ("ip", "-n", ovs_ns, "link", "set", tap, "up")):
        sh(*cmd)
    # IPv6 off inside the servers: only the IPv4 conversations below cross the wire.
    in_ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")


def _uplink(host_ns: str, router_ns: str, peer: str) -> None:
    """The host's physical NIC, cabled to the segment's Linux bridge in the router's namespace."""
    sh("ip", "-n", host_ns, "link", "add", "nic-public", "type", "veth", "peer", "name", peer, "netns", router_ns)
    sh("ip", "-n", router_ns, "link", "set", peer, "master", "lan")
    for cmd in (("ip", "-n", host_ns, "link", "set", "nic-public", "up"),
                ("ip", "-n", router_ns, "link", "set", peer, "up")):
        sh(*cmd)


async def _program_host(ovs: PrivateOvs, host_ns: str, vms: list[Vm]) -> None:
    """Bridges, taps and the flows compiled from the host's own ports (it knows of no other)."""
    ovs.start()
    applier = OvsApplier("br-int", rundir=ovs.rundir, datapath_type="netdev", tap_type="system", netns=host_ns,
                         physical_interfaces={"public": "nic-public"})
    await applier.setup({"public": UPLINK}, None)
    ovs.vsctl("set", "Bridge", "br-public", "datapath_type=netdev")
    taps = [Tap(vm.port.id, t.tap_name(vm.port.id), vm.port.ofport, vm.mac) for vm in vms]
    assert len(await applier.wire(taps)) == len(vms)
    await applier.replace(compile_host(HostNetState(host_ns, tuple(vm.port for vm in vms))))


@pytest.fixture(scope="module")
async def lab() -> Iterator[Lab]:  # type: ignore[misc]
    if not ovs_installed() or not shutil.which("ping"):
        pytest.fail("Open vSwitch and ping are needed (scripts/system-packages.txt: openvswitch-switch, iputils-ping)")
    sfx = uuid.uuid4().hex[:5]
    router_ns = f"cnp-rt-{sfx}"
    probe = subprocess.run(["ip", "netns", "add", router_ns], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {probe.stderr.strip()}")
    folder = Path(tempfile.mkdtemp(prefix="canopy-ovs-pk-"))
    vms: dict[str, Vm] = {}
    namespaces, switches = [router_ns], {}
    try:
        sh("ip", "-n", router_ns, "link", "add", "lan", "type", "bridge")
        sh("ip", "-n", router_ns, "link", "set", "lan", "address", ROUTER_MAC)
        sh("ip", "-n", router_ns, "addr", "add", f"{ROUTER_IP}/24", "dev", "lan")
        for cmd in (("ip", "-n", router_ns, "link", "set", "lo", "up"), ("ip", "-n", router_ns, "link", "set",
                                                                         "lan", "up")):
            sh(*cmd)
        n = 0
        for host, names in HOSTS.items():
            host_ns = f"cnp-{host}-{sfx}"
            sh("ip", "netns", "add", host_ns)
            namespaces.append(host_ns)
            sh("ip", "-n", host_ns, "link", "set", "lo", "up")
            for name in names:
                port_id = str(uuid.uuid4())
                mac, ip = f"fa:16:3e:00:00:{n + 10:02x}", f"203.0.113.{n + 10}"
                vms[name] = Vm(name, f"cnp-{name}-{sfx}", mac, ip,
                               VmPort(port_id, 100 + n, mac, SEG, (ip,), project_id=f"project-{name}"))
                namespaces.append(vms[name].ns)
                _veth(host_ns, t.tap_name(port_id), vms[name].ns, mac, ip)
                n += 1
            _uplink(host_ns, router_ns, f"up-{host}")
            switches[host] = PrivateOvs(folder / host, netns=host_ns)
            await _program_host(switches[host], host_ns, [vms[name] for name in names])
        yield Lab(switches, router_ns, vms, {name: host for host, names in HOSTS.items() for name in names})
    finally:
        for ovs in switches.values():
            ovs.stop()
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def ping(lab: Lab, src_ns: str, dst_ip: str, count: int = 2) -> bool:
    return in_ns(src_ns, "ping", "-c", str(count), "-W", "1", "-i", "0.2", dst_ip, check=False).returncode == 0


def neighbour(ns: str, ip: str) -> str | None:
    """The MAC a namespace's neighbour cache holds for an address (None: no entry)."""
    out = in_ns(ns, "ip", "neigh", "show", ip).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else None


RAW = """
import socket, sys, time, json
mode, iface = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((iface, 0))
if mode == "send":
    for frame in sys.argv[3:]:
        s.send(bytes.fromhex(frame)); time.sleep(0.05)
else:
    mine, seconds = bytes.fromhex(sys.argv[3].replace(":", "")), float(sys.argv[4])
    mreq = socket.if_nametoindex(iface).to_bytes(4, "little") + (1).to_bytes(2, "little") + bytes(10)
    s.setsockopt(263, 1, mreq)  # SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC
    s.settimeout(0.1)
    seen, foreign, end = 0, [], time.time() + seconds
    print("ready", flush=True)
    while time.time() < end:
        try:
            frame, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        seen += 1
        dst = frame[:6]
        if not dst[0] & 1 and dst != mine:
            foreign.append(dst.hex(":"))
    print(json.dumps({"seen": seen, "foreign": foreign}), flush=True)
"""


def arp_frame(dst_mac: str, src_mac: str, op: int, sha: str, spa: str, tha: str, tpa: str) -> str:
    def mac(m: str) -> str:
        return m.replace(":", "")

    def ip(a: str) -> str:
        return "".join(f"{int(x):02x}" for x in a.split("."))

    return (mac(dst_mac) + mac(src_mac) + "0806" + "0001080006040" + str(op) + mac(sha) + ip(spa) + mac(tha)
            + ip(tpa) + "00" * 18)


def send_raw(ns: str, *frames: str) -> None:
    in_ns(ns, sys.executable, "-c", RAW, "send", "eth0", *frames)


def counters(lab: Lab, vm: str) -> dict[str, int]:
    """Packets per flow (by table, priority and match) on the host of `vm`, after the revalidators caught up."""
    ovs = lab.ovs[lab.host_of[vm]]
    ovs.appctl("revalidator/wait")
    out = {}
    for line in ovs.ofctl("dump-flows", "br-int").splitlines():
        if "n_packets=" not in line:
            continue
        fields = dict(p.split("=", 1) for p in line.replace(",", " ").split() if "=" in p)
        match = line.split("priority=")[1].split(" actions=")[0]
        out[f"table={fields.get('table', '0')},priority={match}"] = int(fields["n_packets"])
    return out


async def test_servers_of_two_projects_ping_each_other_and_the_router(lab: Lab) -> None:
    a, b = lab.vms["a"], lab.vms["b"]
    assert lab.host_of["a"] != lab.host_of["b"]
    in_ns(a.ns, "ip", "neigh", "flush", "all")  # resolved by ARP across hosts, with no responder
    assert ping(lab, a.ns, b.ip), "project A cannot reach project B"
    assert ping(lab, b.ns, a.ip), "project B cannot reach project A"
    assert ping(lab, a.ns, ROUTER_IP) and ping(lab, lab.router_ns, b.ip)
    assert neighbour(a.ns, b.ip) == b.mac and neighbour(lab.router_ns, a.ip) == a.mac


async def test_taking_anothers_ip_gets_nothing_through(lab: Lab) -> None:
    a, b, c = lab.vms["a"], lab.vms["b"], lab.vms["c"]
    ping(lab, a.ns, b.ip)  # A knows B's MAC
    before = counters(lab, "c")
    in_ns(c.ns, "ip", "addr", "flush", "dev", "eth0")
    in_ns(c.ns, "ip", "addr", "add", f"{b.ip}/24", "dev", "eth0")
    try:
        assert not ping(lab, c.ns, a.ip) and not ping(lab, c.ns, ROUTER_IP)
        assert neighbour(a.ns, b.ip) == b.mac and neighbour(lab.router_ns, b.ip) in (None, b.mac)
        drops = counters(lab, "c")
        key = f"table={t.PORT_SECURITY},priority=0"
        assert drops[key] > before.get(key, 0), "the spoofed packets did not hit the port-security drop"
    finally:
        in_ns(c.ns, "ip", "addr", "flush", "dev", "eth0")
        in_ns(c.ns, "ip", "addr", "add", f"{c.ip}/24", "dev", "eth0")
    assert ping(lab, c.ns, a.ip)


async def test_a_changed_mac_gets_nothing_through(lab: Lab) -> None:
    a, c = lab.vms["a"], lab.vms["c"]
    in_ns(c.ns, "ip", "neigh", "flush", "all")
    in_ns(c.ns, "ip", "link", "set", "eth0", "address", "fa:16:3e:66:66:66")
    try:
        assert not ping(lab, c.ns, a.ip) and not ping(lab, c.ns, ROUTER_IP)
    finally:
        in_ns(c.ns, "ip", "link", "set", "eth0", "address", c.mac)
    assert ping(lab, c.ns, a.ip)


async def test_forged_arp_poisons_no_cache(lab: Lab) -> None:
    a, b, c = lab.vms["a"], lab.vms["b"], lab.vms["c"]
    assert ping(lab, a.ns, b.ip) and ping(lab, lab.router_ns, b.ip)
    forged = [
        # "B's address is at C", told to A directly, and to everyone (gratuitous), and to the router.
        arp_frame(a.mac, c.mac, 2, c.mac, b.ip, a.mac, a.ip),
        arp_frame("ff:ff:ff:ff:ff:ff", c.mac, 1, c.mac, b.ip, "00:00:00:00:00:00", b.ip),
        arp_frame(ROUTER_MAC, c.mac, 2, c.mac, b.ip, ROUTER_MAC, ROUTER_IP),
        # and with B's MAC as the sender hardware address but C's MAC on the frame
        arp_frame(a.mac, c.mac, 2, b.mac, c.ip, a.mac, a.ip),
    ]
    send_raw(c.ns, *forged)
    time.sleep(0.3)
    assert neighbour(a.ns, b.ip) == b.mac
    assert neighbour(lab.router_ns, b.ip) == b.mac
    assert neighbour(a.ns, c.ip) in (None, c.mac)
    assert ping(lab, a.ns, b.ip)


async def test_a_promiscuous_listener_sees_no_unicast_for_others(lab: Lab) -> None:
    a, b, c = lab.vms["a"], lab.vms["b"], lab.vms["c"]
    with subprocess.Popen(["ip", "netns", "exec", c.ns, sys.executable, "-c", RAW, "listen", "eth0", c.mac, "4"],
                          stdout=subprocess.PIPE, text=True) as listener:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        in_ns(a.ns, "ip", "neigh", "flush", "all")
        in_ns(lab.router_ns, "ip", "neigh", "flush", "all")
        assert ping(lab, a.ns, b.ip, count=5) and ping(lab, lab.router_ns, a.ip, count=3)
        assert ping(lab, b.ns, ROUTER_IP, count=3)
        assert ping(lab, lab.router_ns, c.ip, count=2)  # the listener does hear what is meant for it
        report = json.loads(listener.stdout.readline())
    assert report["seen"] > 0
    assert report["foreign"] == [], f"C saw unicast meant for others: {sorted(set(report['foreign']))}"
