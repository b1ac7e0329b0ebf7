"""Host devices for guest NICs: the tap of each port, made by the agent before the guest starts (so it
exists before anything adds it to a bridge, and survives the guest's stop and start).

    taps = TapDevices()
    await taps.ensure("tap1234abcd-56", mac)     # idempotent
    await taps.remove("tap1234abcd-56")
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path


def tap_name(port_id: str) -> str:
    """The host-side device of a port (as Nova names it: 14 characters, under IFNAMSIZ)."""
    return f"tap{port_id[:11]}"


class VifError(Exception):
    """A tap could not be made or removed."""


async def _ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("ip", *args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise VifError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")


class TapDevices:
    """Taps made with iproute2, in the agent's network namespace or in `netns` (where the hypervisor runs,
    when that is a namespace of its own)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._in = ("-n", netns) if netns else ()

    def exists(self, name: str) -> bool:
        if self.netns is None:
            return Path("/sys/class/net", name).exists()
        return subprocess.run(["ip", *self._in, "link", "show", "dev", name], capture_output=True).returncode == 0

    async def ensure(self, name: str) -> bool:
        """Make the tap (up, no addresses) unless it exists; True when it was made now."""
        if self.exists(name):
            return False
        await _ip(*self._in, "tuntap", "add", "dev", name, "mode", "tap")
        # the host has no address on a guest's tap: no IPv6 autoconfiguration or router solicitations
        if self.netns is None:
            sysctl = Path("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
            if sysctl.exists():
                sysctl.write_text("1")
        else:
            await _ip("netns", "exec", self.netns, "sysctl", "-q", "-w", f"net.ipv6.conf.{name}.disable_ipv6=1")
        await _ip(*self._in, "link", "set", "dev", name, "up")
        return True

    async def remove(self, name: str) -> None:
        if self.exists(name):
            await _ip(*self._in, "link", "del", "dev", name)


class FakeTaps:
    """Taps in memory, for drivers tested without root or a network."""

    def __init__(self) -> None:
        self.devices: set[str] = set()
        self.created = 0

    def exists(self, name: str) -> bool:
        return name in self.devices

    async def ensure(self, name: str) -> bool:
        if name in self.devices:
            return False
        self.devices.add(name)
        self.created += 1
        return True

    async def remove(self, name: str) -> None:
        self.devices.discard(name)
