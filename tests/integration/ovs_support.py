"""Helpers for the tests against a real Open vSwitch: a private instance per test module, and reading
`ofproto/trace` results back as OpenFlow port numbers."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from canopy.agent.net.privateovs import PrivateOvs, ovs_installed


def start_private_ovs(netns: str | None = None) -> Iterator[PrivateOvs]:
    """A private ovsdb-server + ovs-vswitchd in a temp folder; stopped (by PID if need be) afterwards.
    Open vSwitch is in scripts/system-packages.txt, so its absence is a failure, not a skip."""
    if not ovs_installed():
        pytest.fail("Open vSwitch is not installed: `make test` installs openvswitch-switch")
    folder = Path(tempfile.mkdtemp(prefix="canopy-ovs-"))
    ovs = PrivateOvs(folder, netns=netns)
    try:
        ovs.start()
        yield ovs
    finally:
        ovs.stop()
        shutil.rmtree(folder, ignore_errors=True)


_DPIF_PORT = re.compile(r"^\s+(\S+) (\d+)/(\d+):")


def odp_ports(ovs: PrivateOvs) -> dict[int, tuple[str, int]]:
    """Datapath port number -> (interface name, OpenFlow port), from `dpif/show`."""
    out = ovs.appctl("dpif/show")
    found = {}
    for line in out.splitlines():
        m = _DPIF_PORT.match(line)
        if m and m[3].isdigit():
            found[int(m[3])] = (m[1], int(m[2]))
    return found


def top_level_ports(actions: str) -> list[int]:
    """The output ports of a "Datapath actions:" line (the bare numbers at the top level)."""
    depth, token, out = 0, "", []
    for ch in actions + ",":
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            if token.strip().isdigit():
                out.append(int(token.strip()))
            token = ""
        else:
            token += ch
    return out
