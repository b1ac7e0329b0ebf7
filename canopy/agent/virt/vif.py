"""Host devices for guest NICs: the tap of each port, made by the agent before the guest starts (so it
exists before anything adds it to a bridge, and survives the guest's stop and start).

    taps = TapDevices()
    await taps.ensure("tap1234abcd-56", mac)     # idempotent
    await taps.remove("tap1234abcd-56")
"""

from __future__ import annotations

import asyncio
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
    """Taps in the host's network namespace, made with iproute2."""

    def exists(self, name: str) -> bool:
        return Path("/sys/class/net", name).exists()

    async def ensure(self, name: str) -> bool:
        """Make the tap (up, no addresses) unless it exists; True when it was made now."""
        if self.exists(name):
            return False
        await _ip("tuntap", "add", "dev", name, "mode", "tap")
        # the host has no address on a guest's tap: no IPv6 autoconfiguration or router solicitations
        sysctl = Path("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
        if sysctl.exists():
            sysctl.write_text("1")
        await _ip("link", "set", "dev", name, "up")
        return True

    async def remove(self, name: str) -> None:
        if self.exists(name):
            await _ip("link", "del", "dev", name)


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
