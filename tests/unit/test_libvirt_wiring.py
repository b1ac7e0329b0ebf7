"""`canopy agent --driver libvirt`: the agent's network node applies flows as `[network] apply` says."""

from __future__ import annotations

from pathlib import Path

from canopy.agent.net.applier import OvsApplier
from canopy.agent.net.fake import FakeApplier
from canopy.agent.virt.libvirt.wiring import libvirt_agent
from canopy.agent.virt.vif import FakeTaps
from canopy.config import Settings
from canopy.rpc.local import LocalTransport


def test_a_libvirt_agent_programs_the_hosts_switch_when_told_to(tmp_path: Path) -> None:
    s = Settings()
    s.libvirt.uri, s.libvirt.instances_path = "test:///default", tmp_path / "instances"
    assert isinstance(libvirt_agent(s, "hv-1", LocalTransport(), taps=FakeTaps()).net.applier, FakeApplier)
    s.network.apply, s.network.integration_bridge = "ovs", "br-canopy"
    applier = libvirt_agent(s, "hv-1", LocalTransport(), taps=FakeTaps()).net.applier
    assert isinstance(applier, OvsApplier) and applier.bridge == "br-canopy"
