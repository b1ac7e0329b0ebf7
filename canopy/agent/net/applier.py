"""The thin shell that puts a compiled Program into Open vSwitch, and the Applier protocol it shares
with the fake.

- `setup`: the integration bridge (OpenFlow 1.3/1.4 only, fail-mode secure so that a new bridge drops
  everything until Canopy programs it), a patch pair to one physical bridge per physical network, and
  one flow-based VXLAN port; all in one ovsdb transaction, idempotent.
- `wire`: the VM taps on the bridge in one ovsdb transaction (per 1,000 taps): a tap is added only when
  it exists (OVS accepts non-existent ones and leaves them broken), stale taps are removed.
- `replace`: a full load with `ovs-ofctl --bundle replace-flows`: one atomic bundle, and OVS sends only
  what differs, so reloading an unchanged set changes nothing on the switch.
- `change`: one `--bundle` of adds and strict deletes. Meters, which bundles cannot carry, are added
  before the flows that use them and deleted after (many at once over one OpenFlow connection, see
  `ofmeter`; one by one with ovs-ofctl).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from canopy.agent.net import ofmeter
from canopy.agent.net import tables as t
from canopy.agent.net.model import Meter, Program, ProgramDiff, flow_line

OFVERSION = "OpenFlow13"
WIRE_CHUNK = 1000  # taps per ovsdb transaction: one ovs-vsctl argument list stays well under ARG_MAX
METER_CONCURRENCY = 8
_METER = re.compile(r"meter=(\d+)\s+kbps\s+burst\s+bands=\s*type=drop\s+rate=(\d+)\s+burst_size=(\d+)")


@dataclass(frozen=True, slots=True)
class Tap:
    """A VM's interface on the integration bridge."""

    port_id: str
    name: str
    ofport: int
    mac: str
    device_id: str = ""


class Applier(Protocol):
    """Programs one host's integration bridge (Open vSwitch, or the fake)."""

    async def setup(self, uplinks: Mapping[str, int], tunnel_ip: str | None) -> None:
        """Create what is missing of the bridges, uplinks (physical network -> OpenFlow port) and tunnel port."""
        ...

    async def wire(self, taps: Sequence[Tap]) -> list[str]:
        """Make the bridge hold exactly these taps (those that exist); the port ids wired."""
        ...

    async def replace(self, program: Program) -> None:
        """Load the complete program atomically."""
        ...

    async def change(self, diff: ProgramDiff) -> None:
        """Apply a diff as one bundle."""
        ...

    async def dump(self) -> list[str]:
        """The flows the bridge holds, in ovs-ofctl syntax."""
        ...


class OvsError(RuntimeError):
    """An Open vSwitch command failed; the message has the command and its error output."""


def existing_links(netns: str | None = None) -> set[str]:
    """The names of the network interfaces in this (or the named) network namespace."""
    if netns is None:
        try:
            return set(os.listdir("/sys/class/net"))
        except FileNotFoundError:
            return set()
    import subprocess

    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":", 2)[1].strip().split("@")[0] for line in out.stdout.splitlines() if ":" in line}


class OvsApplier:
    """Programs a real Open vSwitch through ovs-vsctl and ovs-ofctl (a private instance when `rundir`
    is given: the tools find it through OVS_RUNDIR)."""

    def __init__(
        self,
        bridge: str = "br-int",
        *,
        rundir: Path | None = None,
        datapath_type: Literal["system", "netdev", "dummy"] = "system",
        tap_type: Literal["system", "dummy"] = "system",
        physical_bridges: Mapping[str, str] | None = None,
        physical_interfaces: Mapping[str, str] | None = None,
        physical_bridge_format: str = "br-{physnet}",
        netns: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.bridge = bridge
        self.datapath_type = datapath_type
        self.tap_type = tap_type
        self.physical_bridges = dict(physical_bridges or {})
        self.physical_interfaces = dict(physical_interfaces or {})
        self.physical_bridge_format = physical_bridge_format
        self.netns = netns
        self.timeout_s = timeout_s
        self.env = dict(os.environ)
        if rundir is not None:
            for name in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"):
                self.env[name] = str(rundir)

    # -- processes --------------------------------------------------------------------------------

    async def _run(self, *args: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *args, env=self.env, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None),
                                              self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise OvsError(f"{args[0]} {args[1:3]} timed out after {self.timeout_s:g}s") from None
        if proc.returncode != 0:
            raise OvsError(f"{' '.join(args[:4])} failed ({proc.returncode}): {err.decode().strip()[:2000]}")
        return out.decode()

    async def vsctl(self, *args: str) -> str:
        """ovs-vsctl with a timeout, so a dead ovsdb-server is an error rather than a hang."""
        return await self._run("ovs-vsctl", f"--timeout={int(self.timeout_s)}", *args)

    async def ofctl(self, *args: str, stdin: str | None = None) -> str:
        """ovs-ofctl on this bridge, always with an explicit OpenFlow version."""
        return await self._run("ovs-ofctl", "-O", OFVERSION, *args, stdin=stdin)

    # -- bridges ----------------------------------------------------------------------------------

    def physical_bridge(self, physnet: str) -> str:
        return self.physical_bridges.get(physnet) or self.physical_bridge_format.format(physnet=physnet)

    async def setup(self, uplinks: Mapping[str, int], tunnel_ip: str | None) -> None:
        br = self.bridge
        cmd = ["--", "--may-exist", "add-br", br, "--", "set", "Bridge", br, f"datapath_type={self.datapath_type}",
               "protocols=OpenFlow13,OpenFlow14", "fail-mode=secure", "external_ids:canopy=integration"]
        for physnet, ofport in sorted(uplinks.items()):
            cmd += self._uplink(physnet, ofport)
        if tunnel_ip:
            vx = f"{br}-vx"
            cmd += ["--", "--may-exist", "add-port", br, vx, "--", "set", "Interface", vx, "type=vxlan",
                    f"ofport_request={t.TUNNEL_OFPORT}", "options:remote_ip=flow", "options:key=flow",
                    f"options:local_ip={tunnel_ip}"]
        await self.vsctl(*cmd)

    def _uplink(self, physnet: str, ofport: int) -> list[str]:
        """A patch pair from the integration bridge to the physical network's bridge (a learning switch)."""
        br, pb = self.bridge, self.physical_bridge(physnet)
        inner, outer = f"{br}--{physnet}", f"{pb}--{br}"
        cmd = ["--", "--may-exist", "add-br", pb, "--", "set", "Bridge", pb, f"datapath_type={self.datapath_type}",
               "fail-mode=standalone",
               "--", "--may-exist", "add-port", br, inner, "--", "set", "Interface", inner, "type=patch",
               f"options:peer={outer}", f"ofport_request={ofport}",
               "--", "--may-exist", "add-port", pb, outer, "--", "set", "Interface", outer, "type=patch",
               f"options:peer={inner}"]
        nic = self.physical_interfaces.get(physnet)
        if nic:
            cmd += ["--", "--may-exist", "add-port", pb, nic]
        return cmd

    # -- taps -------------------------------------------------------------------------------------

    async def wired_taps(self) -> dict[str, tuple[int | None, str]]:
        """The taps Canopy put on this bridge: name -> (requested OpenFlow port, port id)."""
        out = await self.vsctl("--format=json", "--columns=name,ofport_request,external_ids", "find", "Interface",
                               f"external_ids:canopy-bridge={self.bridge}")
        found = {}
        for name, ofport_request, ext in json.loads(out)["data"]:
            request = ofport_request if isinstance(ofport_request, int) else None
            found[name] = (request, dict(ext[1]).get("iface-id", ""))
        return found

    async def wire(self, taps: Sequence[Tap]) -> list[str]:
        current = await self.wired_taps()
        if self.tap_type == "system":
            exists = await asyncio.to_thread(existing_links, self.netns)
            present = [tap for tap in taps if tap.name in exists]
        else:
            present = list(taps)
        wanted = {tap.name: tap for tap in present}
        stale = [name for name in current if name not in wanted]
        moved = [tap for tap in present if current.get(tap.name) not in (None, (tap.ofport, tap.port_id))]
        new = [tap for tap in present if tap.name not in current or tap in moved]
        commands: list[list[str]] = [["--", "--if-exists", "del-port", self.bridge, name]
                                     for name in (*stale, *(tap.name for tap in moved))]
        commands += [self._add_tap(tap) for tap in new]
        for i in range(0, len(commands), WIRE_CHUNK):
            await self.vsctl(*(arg for c in commands[i:i + WIRE_CHUNK] for arg in c))
        return [tap.port_id for tap in present]

    def _add_tap(self, tap: Tap) -> list[str]:
        cmd = ["--", "--may-exist", "add-port", self.bridge, tap.name, "--", "set", "Interface", tap.name,
               f"ofport_request={tap.ofport}", f"external_ids:iface-id={tap.port_id}",
               f"external_ids:attached-mac={tap.mac}", "external_ids:iface-status=active",
               f"external_ids:canopy-bridge={self.bridge}"]
        if tap.device_id:
            cmd.append(f"external_ids:vm-uuid={tap.device_id}")
        if self.tap_type == "dummy":
            cmd.append("type=dummy")
        return cmd

    # -- flows and meters -------------------------------------------------------------------------

    async def replace(self, program: Program) -> None:
        have = await self.dump_meters()
        await self._set_meters({i: m for i, m in program.meters.items() if have.get(i) != m}, have)
        await self.ofctl("--bundle", "replace-flows", self.bridge, "-", stdin="\n".join(program.lines()) + "\n")
        await self._delete_meters([i for i in have if i not in program.meters])

    async def change(self, diff: ProgramDiff) -> None:
        if diff.meters:
            await self._set_meters(diff.meters, await self.dump_meters())
        if diff.add or diff.delete:
            lines = [f"delete_strict {key}" for key in diff.delete]
            lines += [f"add {flow_line(k, v)}" for k, v in diff.add.items()]
            await self.ofctl("--bundle", "add-flows", self.bridge, "-", stdin="\n".join(lines) + "\n")
        await self._delete_meters(list(diff.delete_meters))

    async def dump(self) -> list[str]:
        out = await self.ofctl("dump-flows", "--no-stats", self.bridge)
        return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("OFPST")]

    async def dump_meters(self) -> dict[int, Meter]:
        """The meters the bridge holds."""
        out = await self.ofctl("dump-meters", self.bridge)
        return {int(m[1]): Meter(int(m[1]), int(m[2]), int(m[3])) for m in _METER.finditer(out)}

    def mgmt_socket(self) -> Path:
        """The bridge's OpenFlow management socket."""
        return Path(self.env.get("OVS_RUNDIR") or "/var/run/openvswitch") / f"{self.bridge}.mgmt"

    async def _set_meters(self, meters: Mapping[int, Meter], have: Mapping[int, Meter]) -> None:
        if not meters:
            return
        if len(meters) > 1 and self.mgmt_socket().exists():  # many at once: one OpenFlow connection
            await ofmeter.apply_meters(self.mgmt_socket(), [
                (ofmeter.OFPMC_MODIFY if m.id in have else ofmeter.OFPMC_ADD, m) for m in meters.values()])
            return
        gate = asyncio.Semaphore(METER_CONCURRENCY)

        async def one(meter: Meter) -> None:
            async with gate:
                await self.ofctl("mod-meter" if meter.id in have else "add-meter", self.bridge, meter.text())

        await asyncio.gather(*(one(m) for m in meters.values()))

    async def _delete_meters(self, ids: Sequence[int]) -> None:
        if len(ids) > 1 and self.mgmt_socket().exists():
            await ofmeter.apply_meters(self.mgmt_socket(), [(ofmeter.OFPMC_DELETE, Meter(i, 0, 0)) for i in ids])
            return
        for meter_id in ids:
            await self.ofctl("del-meters", self.bridge, f"meter={meter_id}")
