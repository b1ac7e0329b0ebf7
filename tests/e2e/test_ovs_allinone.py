"""End to end on a real switch: `canopy all-in-one` whose agents apply their flows to a private Open vSwitch
(`network.apply = "private-ovs"`, one integration bridge per simulated host), driven by openstacksdk. Two
servers of different projects boot on one flat network; both ports' flows are on their hosts' bridges,
and `canopy network flows HOST` is exactly what each bridge holds (ovs-ofctl diff-flows is empty)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest

from canopy.agent.net.privateovs import PrivateOvs, ovs_installed
from tests.clouds import ROOT
from tests.e2e.running import RunningCloud, run_all_in_one

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ovs_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningCloud, Path]]:
    """An all-in-one with 2 simulated hosts applying to its private Open vSwitch; stopped by its PID."""
    if not ovs_installed():
        pytest.fail("Open vSwitch is not installed: `make test` installs openvswitch-switch")
    folder = tmp_path_factory.mktemp("e2e-ovs")
    env = {"CANOPY_FAKE__SPAWN_DELAY_S": "0.02", "CANOPY_FAKE__OP_DELAY_S": "0.01",
           "CANOPY_NETWORK__APPLY": "private-ovs"}
    data = folder / "var"
    try:
        with run_all_in_one(folder, 2, env) as cloud:
            yield cloud, data
    finally:
        PrivateOvs(data / "ovs").stop()  # a no-op when the all-in-one stopped it, as it should


def connect(cloud: RunningCloud, user: str) -> Any:
    return openstack.connection.Connection(
        auth_url=cloud.auth_url, username=user, password=user, project_name=user, user_domain_name="Default",
        project_domain_name="Default", region_name="RegionOne", compute_api_version="2")


def flows_of(data: Path, host: str, tmp: Path) -> tuple[Path, str]:
    done = subprocess.run([sys.executable, "-m", "canopy.cli", "network", "flows", host, "--data-dir", str(data)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listing = tmp / f"{host}.flows"
    listing.write_text(done.stdout)
    return listing, done.stdout


def test_two_projects_on_one_flat_network_flows_on_the_switch(ovs_cloud: Any, tmp_path: Path) -> None:
    cloud, data = ovs_cloud
    ovs = PrivateOvs(data / "ovs")
    admin, demo = connect(cloud, "admin"), connect(cloud, "demo")
    try:
        net = admin.network.create_network(name=f"flat-{uuid.uuid4().hex[:6]}", shared=True,
                                           provider_network_type="flat", provider_physical_network="e2e-ovs")
        admin.network.create_subnet(network_id=net.id, ip_version=4, cidr="198.51.100.0/24",
                                    gateway_ip="198.51.100.1")
        image, flavor = admin.image.find_image("canopy-tiny"), admin.compute.find_flavor("m1.tiny")
        servers = [conn.compute.create_server(name=f"ovs-{who}", image_id=image.id, flavor_id=flavor.id,
                                              networks=[{"uuid": net.id}]) for who, conn in (("a", admin),
                                                                                              ("b", demo))]
        servers = [conn.compute.wait_for_server(s, status="ACTIVE", wait=60, interval=0.2)
                   for conn, s in zip((admin, demo), servers, strict=True)]
        ports = [next(iter(admin.network.ports(device_id=s.id))) for s in servers]
        assert ports[0].project_id != ports[1].project_id
        for port, other in ((ports[0], ports[1]), (ports[1], ports[0])):
            host = port.binding_host_id
            bridge = f"bi-{int(host.rsplit('-', 1)[1]):04d}"
            ofport = port.binding_vif_details["ofport"]
            held = ovs.ofctl("dump-flows", "--no-stats", bridge)
            assert f"in_port={ofport} " in held, f"no flows for port {port.id} on {bridge}"
            assert f"arp_tpa={port.fixed_ips[0]['ip_address']}" in held  # ARP for its address reaches it
            if other.binding_host_id != host:  # no ARP responder: a host holds only its own ports
                assert other.fixed_ips[0]["ip_address"] not in held
            listing, text = flows_of(data, host, tmp_path)
            assert f"# port {port.id} mac {port.mac_address}" in text
            assert ovs.ofctl("diff-flows", bridge, str(listing)) == "", f"{bridge} differs from canopy network flows"
            wired = ovs.vsctl("--columns=name,ofport", "find", "Interface", f"external_ids:iface-id={port.id}")
            assert f"{ofport}" in wired
        for conn, s in zip((admin, demo), servers, strict=True):
            conn.compute.delete_server(s)
            conn.compute.wait_for_delete(s, wait=60, interval=0.2)
        deadline = time.monotonic() + 10
        bridge = f"bi-{int(ports[0].binding_host_id.rsplit('-', 1)[1]):04d}"
        while f"in_port={ports[0].binding_vif_details['ofport']} " in ovs.ofctl("dump-flows", "--no-stats", bridge):
            assert time.monotonic() < deadline, "the deleted server's flows stayed"
            time.sleep(0.1)
    finally:
        admin.close()
        demo.close()
