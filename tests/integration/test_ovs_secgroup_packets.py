"""Security groups with real packets through real conntrack: Open vSwitch on the `netdev` datapath in a
network namespace of the test's own, servers as network namespaces on veth pairs (203.0.113.0/24), TCP
between Python socket servers and clients run with `ip netns exec`, each bounded in time.

- a connection a rule allows works; one no rule allows is dropped;
- the replies of an allowed outbound connection come back (server A has no ingress rule for them);
- removing a rule stops the connections it allowed, established ones included (their ct_mark);
- an unrelated rule change (flows changed by diff, in a bundle) does not disturb a TCP stream that keeps
  sending through it.
"""

from __future__ import annotations

import dataclasses
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
from canopy.agent.net.model import Firewall, HostNetState, Program, SecGroup, SgRule, VmPort, diff_programs
from canopy.agent.net.privateovs import PrivateOvs, ovs_installed
from tests.integration.test_ovs_packets import SEG, in_ns, sh

A_IP, B_IP = "203.0.113.20", "203.0.113.21"
EGRESS_ALL = SgRule(mark=1001, direction="egress", ethertype=4)
SSH_TO_B = SgRule(mark=1002, direction="ingress", ethertype=4, protocol=6, port_min=2222, port_max=2222)
STREAM_TO_B = SgRule(mark=1003, direction="ingress", ethertype=4, protocol=6, port_min=3333, port_max=3333)
UNRELATED = SgRule(mark=1004, direction="ingress", ethertype=4, protocol=17, port_min=53, port_max=53)
ICMP_IN = SgRule(mark=1005, direction="ingress", ethertype=4, protocol=1)

# A TCP server: accepts connections and echoes each line back, for `seconds`.
SERVER = """
import socket, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(8); s.settimeout(0.2)
def echo(c):
    c.settimeout(seconds)
    try:
        while data := c.recv(4096):
            c.sendall(data)
    except OSError:
        pass
end = time.time() + seconds
print("ready", flush=True)
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

# A TCP client: connects (2 s), then sends a numbered line every 0.1 s and reads its echo (1 s each), and
# prints "connected", one "ok N" per echo, and "lost" when one does not come back.
CLIENT = """
import socket, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    c = socket.create_connection((ip, port), timeout=2)
except OSError as exc:
    print("refused", exc, flush=True); sys.exit(0)
print("connected", flush=True)
c.settimeout(1.0)
end, n = time.time() + seconds, 0
while time.time() < end:
    n += 1
    try:
        c.sendall(b"%d\\n" % n)
        got = b""
        while not got.endswith(b"\\n"):
            chunk = c.recv(64)
            if not chunk:
                raise OSError("closed")
            got += chunk
    except OSError:
        print("lost", n, flush=True); sys.exit(0)
    print("ok", n, flush=True)
    time.sleep(0.1)
"""


@dataclass
class Lab:
    ovs: PrivateOvs
    applier: OvsApplier
    a: VmPort
    b: VmPort
    a_ns: str
    b_ns: str
    program: Program

    async def rules(self, *b_rules: SgRule) -> None:
        """Give B's group these rules (A's group keeps egress-all), applied as the agent does: a diff."""
        new = compile_host(_state(self.a, self.b, b_rules))
        await self.applier.change(diff_programs(self.program, new))
        self.program = new


def _state(a: VmPort, b: VmPort, b_rules: tuple[SgRule, ...]) -> HostNetState:
    fw = Firewall(groups=(SecGroup("sg-a", 11, (EGRESS_ALL,), "a"),
                          SecGroup("sg-b", 12, (dataclasses.replace(EGRESS_ALL, mark=1011), *b_rules), "b")))
    return HostNetState("lab", (a, b), firewall=fw)


def _veth(ovs_ns: str, tap: str, ns: str, mac: str, ip: str) -> None:
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ovs_ns, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
    sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    for cmd in (("ip", "-n", ns, "link", "set", "lo", "up"), ("ip", "-n", ns, "link", "set", "eth0", "up"),
                ("ip", "-n", ovs_ns, "link", "set", tap, "up")):
        sh(*cmd)
    in_ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
    # TCP over veth on the netdev datapath needs checksums computed in software
    in_ns(ns, "ethtool", "-K", "eth0", "tx", "off")


@pytest.fixture(scope="module")
async def lab() -> Iterator[Lab]:  # type: ignore[misc]
    if not ovs_installed() or not shutil.which("ethtool"):
        pytest.fail("Open vSwitch and ethtool are needed (scripts/system-packages.txt: openvswitch-switch, ethtool)")
    sfx = uuid.uuid4().hex[:5]
    ovs_ns = f"cnp-sgo-{sfx}"
    probe = subprocess.run(["ip", "netns", "add", ovs_ns], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {probe.stderr.strip()}")
    folder = Path(tempfile.mkdtemp(prefix="canopy-ovs-sg-"))
    namespaces = [ovs_ns]
    ovs = PrivateOvs(folder, netns=ovs_ns)
    try:
        sh("ip", "-n", ovs_ns, "link", "set", "lo", "up")
        ports = []
        for n, ip in enumerate((A_IP, B_IP)):
            port_id, mac, ns = str(uuid.uuid4()), f"fa:16:3e:00:01:{n + 10:02x}", f"cnp-sg{n}-{sfx}"
            ports.append(VmPort(port_id, 100 + n, mac, SEG, (ip,), project_id=f"project-{n}",
                                groups=("sg-a",) if n == 0 else ("sg-b",)))
            namespaces.append(ns)
            _veth(ovs_ns, t.tap_name(port_id), ns, mac, ip)
        ovs.start()
        applier = OvsApplier("br-int", rundir=ovs.rundir, datapath_type="netdev", tap_type="system", netns=ovs_ns,
                             physical_interfaces={})
        await applier.setup({"public": 7}, None)
        a, b = ports
        assert len(await applier.wire([Tap(p.id, t.tap_name(p.id), p.ofport, p.mac) for p in ports])) == 2
        program = compile_host(_state(a, b, ()))
        await applier.replace(program)
        yield Lab(ovs, applier, a, b, namespaces[1], namespaces[2], program)
    finally:
        ovs.stop()
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


class Proc:
    """A Python script run in a namespace, bounded in time, killed (by its own PID) on the way out."""

    def __init__(self, ns: str, script: str, *args: str) -> None:
        self.p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-u", "-c", script, *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def line(self, timeout: float = 10.0) -> str:
        assert self.p.stdout is not None
        import select

        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert ready, "no output in time"
        return self.p.stdout.readline().strip()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)
        if self.p.stdout is not None:
            self.p.stdout.close()


def connect(lab: Lab, ns: str, ip: str, port: int, seconds: float = 1.0) -> list[str]:
    """Run the client to the end; its lines."""
    done = in_ns(ns, sys.executable, "-u", "-c", CLIENT, ip, str(port), str(seconds), check=False)
    return done.stdout.split("\n")


@pytest.fixture
def server_b(lab: Lab) -> Iterator[None]:
    """B listens on 2222 and 3333 for the test's length (at most 60 s)."""
    procs = [Proc(lab.b_ns, SERVER, str(port), "60") for port in (2222, 3333)]
    try:
        assert all(p.line() == "ready" for p in procs)
        yield
    finally:
        for p in procs:
            p.stop()


async def test_an_allowed_connection_works_and_an_unallowed_one_is_dropped(lab: Lab, server_b: None) -> None:
    await lab.rules(SSH_TO_B)
    assert "connected" in connect(lab, lab.a_ns, B_IP, 2222), "a rule allows A → B:2222"
    assert any(x.startswith("refused") for x in connect(lab, lab.a_ns, B_IP, 3333)), "no rule allows B:3333"


async def test_replies_of_an_outbound_connection_come_back(lab: Lab) -> None:
    """A allows no ingress at all: the echoes of its own connection to B come back all the same."""
    await lab.rules(SSH_TO_B)
    server = Proc(lab.b_ns, SERVER, "2222", "20")
    try:
        assert server.line() == "ready"
        lines = connect(lab, lab.a_ns, B_IP, 2222, seconds=0.5)
        assert "connected" in lines and any(x.startswith("ok") for x in lines), lines  # echoes reached A
        # and A, which allows no ingress, receives nothing it did not ask for
        back = Proc(lab.a_ns, SERVER, "2222", "20")
        try:
            assert back.line() == "ready"
            assert any(x.startswith("refused") for x in connect(lab, lab.b_ns, A_IP, 2222))
        finally:
            back.stop()
    finally:
        server.stop()


async def test_removing_a_rule_stops_its_established_connections(lab: Lab, server_b: None) -> None:
    await lab.rules(SSH_TO_B, STREAM_TO_B)
    stream = Proc(lab.a_ns, CLIENT, B_IP, "3333", "30")
    ssh = Proc(lab.a_ns, CLIENT, B_IP, "2222", "30")
    try:
        assert stream.line() == "connected" and ssh.line() == "connected"
        assert stream.line().startswith("ok") and ssh.line().startswith("ok")
        await lab.rules(SSH_TO_B)  # 3333's rule goes: its connection with it
        deadline = time.monotonic() + 15
        while (line := stream.line()).startswith("ok"):
            assert time.monotonic() < deadline, "the stream outlived its rule"
        assert line.startswith("lost"), line
        # the other rule's connection is untouched
        for _ in range(5):
            assert ssh.line().startswith("ok")
    finally:
        stream.stop()
        ssh.stop()


async def test_an_unrelated_rule_change_does_not_disturb_a_stream(lab: Lab, server_b: None) -> None:
    await lab.rules(STREAM_TO_B)
    stream = Proc(lab.a_ns, CLIENT, B_IP, "3333", "6")
    try:
        assert stream.line() == "connected"
        assert stream.line().startswith("ok")
        for rules in ((STREAM_TO_B, UNRELATED), (STREAM_TO_B, UNRELATED, ICMP_IN), (STREAM_TO_B,)):
            await lab.rules(*rules)  # while the stream keeps sending
            assert stream.line().startswith("ok")
        seen = 0
        while (line := stream.line(timeout=15)) and line.startswith("ok"):
            seen += 1
        assert line == "" and seen > 0, f"the stream broke: {line!r}"  # it ran to its end
    finally:
        stream.stop()
