"""Building an agent's network node from the settings: compile only (a fake switch), apply to the
host's Open vSwitch, or (all-in-one) apply to a private Open vSwitch with one bridge per simulated host."""

from __future__ import annotations

from pathlib import Path

from canopy.agent.net.applier import Applier, OvsApplier
from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.agent.net.privateovs import PrivateOvs
from canopy.config import Settings


def start_private_ovs(settings: Settings) -> PrivateOvs | None:
    """The all-in-one's private Open vSwitch under data_dir/ovs, when `network.apply` asks for one."""
    if settings.network.apply != "private-ovs":
        return None
    return PrivateOvs(Path(settings.data_dir).resolve() / "ovs").start()


def make_applier(settings: Settings, index: int | None = None, ovs: PrivateOvs | None = None) -> Applier:
    """The applier the settings ask for (`index`: the simulated host's number in a shared private switch)."""
    net = settings.network
    if net.apply == "compile":
        return FakeApplier()
    if net.apply == "private-ovs":
        if ovs is None:
            raise ValueError("network.apply = 'private-ovs' needs the all-in-one's private Open vSwitch")
        n = index or 0
        # One OVS holds every simulated host: each gets its own integration bridge and physical bridges.
        return OvsApplier(f"bi-{n:04d}", rundir=ovs.rundir, datapath_type="dummy", tap_type="dummy",
                          physical_bridge_format=f"bp{n:04d}-{{physnet}}")
    return OvsApplier(net.integration_bridge, rundir=Path(net.ovs_rundir) if net.ovs_rundir else None,
                      datapath_type=net.datapath_type, tap_type=net.tap_type, physical_bridges=net.physical_bridges,
                      physical_interfaces=net.physical_interfaces)


def make_node(host: str, settings: Settings, index: int | None = None, ovs: PrivateOvs | None = None) -> NetNode:
    """An agent's network node as configured."""
    net = settings.network
    return NetNode(host, make_applier(settings, index, ovs), uplink_ofports=net.uplink_ofports,
                   tunnel_ip=net.tunnel_ip or None, reconcile_s=net.reconcile_s, full_sync_s=net.full_sync_s)
