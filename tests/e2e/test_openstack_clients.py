"""End to end: a real `canopy all-in-one` process driven by openstacksdk and the `openstack` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import openstack
import pytest
from openstack import exceptions as osexc

from tests.e2e.running import RunningCloud

pytestmark = pytest.mark.e2e


def connect(cloud: RunningCloud, user: str) -> openstack.connection.Connection:
    return openstack.connection.Connection(
        auth_url=cloud.auth_url, username=user, password=user, project_name=user, user_domain_name="Default",
        project_domain_name="Default", region_name="RegionOne", compute_api_version="2")


@pytest.fixture(scope="module")
def admin(running_cloud: RunningCloud) -> Any:
    conn = connect(running_cloud, "admin")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def demo(running_cloud: RunningCloud) -> Any:
    conn = connect(running_cloud, "demo")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def e2e_network(admin: Any) -> Any:
    """A shared flat network with a subnet from 198.51.100.0/24, made through the SDK."""
    net = admin.network.create_network(name=f"e2e-{uuid.uuid4().hex[:6]}", shared=True,
                                       provider_network_type="flat", provider_physical_network="e2e")
    subnet = admin.network.create_subnet(network_id=net.id, ip_version=4, cidr="198.51.100.0/24",
                                         gateway_ip="198.51.100.1", name="e2e-v4")
    return net, subnet


def _boot(conn: Any, name: str, network_id: str, flavor: str = "m1.tiny") -> Any:
    image = conn.image.find_image("canopy-tiny")
    flavor_obj = conn.compute.find_flavor(flavor)
    return conn.compute.create_server(name=name, image_id=image.id, flavor_id=flavor_obj.id,
                                      networks=[{"uuid": network_id}])


def test_sdk_server_lifecycle(demo: Any, admin: Any, e2e_network: Any) -> None:
    net, subnet = e2e_network
    server = _boot(demo, "sdk-1", net.id)
    server = demo.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.2)
    addrs = server.addresses[net.name]
    assert addrs[0]["version"] == 4 and addrs[0]["addr"].startswith("198.51.100.")
    ip = addrs[0]["addr"]
    demo.compute.stop_server(server)
    demo.compute.wait_for_server(server, status="SHUTOFF", wait=60, interval=0.2)
    demo.compute.start_server(server)
    demo.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.2)
    demo.compute.reboot_server(server, "HARD")
    server = demo.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.2)
    assert server.power_state == 1
    held = list(admin.network.ports(fixed_ips=f"ip_address={ip}"))
    assert len(held) == 1 and held[0].device_id == server.id
    demo.compute.delete_server(server)
    demo.compute.wait_for_delete(server, wait=60, interval=0.2)
    assert list(admin.network.ports(fixed_ips=f"ip_address={ip}")) == []
    assert demo.compute.find_server(server.id) is None


def test_sdk_flavor_too_big_ends_in_error_with_a_fault(admin: Any, e2e_network: Any) -> None:
    net, _ = e2e_network
    flavor = admin.compute.create_flavor(name=f"too-big-{uuid.uuid4().hex[:6]}", ram=200_000, vcpus=2, disk=1)
    server = _boot(admin, "too-big", net.id, flavor.name)
    server = admin.compute.wait_for_server(server, status="ERROR", failures=[], wait=60, interval=0.2)
    assert "No valid host" in server.fault["message"]
    assert "ram:" in server.fault["message"]
    admin.compute.delete_server(server)
    admin.compute.wait_for_delete(server, wait=60, interval=0.2)


def test_sdk_cross_project_isolation(demo: Any, admin: Any, e2e_network: Any) -> None:
    net, _ = e2e_network
    server = admin.compute.wait_for_server(_boot(admin, "admin-only", net.id), status="ACTIVE", wait=60,
                                           interval=0.2)
    with pytest.raises(osexc.NotFoundException):
        demo.compute.get_server(server.id)
    with pytest.raises(osexc.NotFoundException):
        demo.compute.stop_server(server.id)
    with pytest.raises(osexc.ForbiddenException):
        list(demo.compute.services())
    assert server.id not in {s.id for s in demo.compute.servers()}
    admin.compute.delete_server(server)
    admin.compute.wait_for_delete(server, wait=60, interval=0.2)


def _cli(cloud: RunningCloud, user_cloud: str, *args: str) -> Any:
    exe = Path(sys.executable).parent / "openstack"
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(cloud.clouds_yaml)}
    proc = subprocess.run([str(exe), "--os-cloud", user_cloud, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"openstack {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout) if "-f" in args and "json" in args else proc.stdout


def test_openstack_cli_server_lifecycle(running_cloud: RunningCloud, e2e_network: Any) -> None:
    net, _ = e2e_network
    made = _cli(running_cloud, "canopy-demo", "server", "create", "--flavor", "m1.tiny", "--image", "canopy-tiny",
                "--network", net.name, "--wait", "-f", "json", "cli-1")
    assert made["status"] == "ACTIVE"
    assert "198.51.100." in json.dumps(made["addresses"])
    listed = _cli(running_cloud, "canopy-demo", "server", "list", "-f", "json")
    assert "cli-1" in {s["Name"] for s in listed}
    _cli(running_cloud, "canopy-demo", "server", "stop", "cli-1")
    _cli(running_cloud, "canopy-demo", "server", "delete", "--wait", "cli-1")
    listed = _cli(running_cloud, "canopy-demo", "server", "list", "-f", "json")
    assert "cli-1" not in {s["Name"] for s in listed}
    services = _cli(running_cloud, "canopy", "compute", "service", "list", "-f", "json")
    assert any(s["Binary"] == "canopy-agent" and s["State"] == "up" for s in services)


def test_openstack_cli_resize_migrate_snapshot_rescue_rebuild(running_cloud: RunningCloud, e2e_network: Any) -> None:
    """The mobility actions as operators and customers type them (the simulated hosts of the all-in-one)."""
    net, _ = e2e_network

    def show() -> Any:
        return _cli(running_cloud, "canopy", "server", "show", "-f", "json", "mob-1")

    made = _cli(running_cloud, "canopy", "server", "create", "--flavor", "m1.tiny", "--image", "canopy-tiny",
                "--network", net.name, "--wait", "-f", "json", "mob-1")
    assert made["status"] == "ACTIVE"
    _cli(running_cloud, "canopy", "server", "resize", "--flavor", "m1.small", "--wait", "mob-1")
    assert show()["status"] == "VERIFY_RESIZE"
    _cli(running_cloud, "canopy", "server", "resize", "confirm", "mob-1")
    s = show()
    assert s["status"] == "ACTIVE" and "m1.small" in json.dumps(s["flavor"])
    source = s["OS-EXT-SRV-ATTR:host"]
    _cli(running_cloud, "canopy", "--os-compute-api-version", "2.30", "server", "migrate", "--live-migration",
         "--wait", "mob-1")
    s = show()
    assert s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] != source, s
    migs = _cli(running_cloud, "canopy", "--os-compute-api-version", "2.59", "server", "migration", "list",
                "--server", "mob-1", "-f", "json")
    assert {(m["Type"], m["Status"]) for m in migs} >= {("resize", "confirmed"), ("live-migration", "completed")}
    snap = _cli(running_cloud, "canopy", "server", "image", "create", "--name", "mob-1-snap", "--wait", "-f", "json",
                "mob-1")
    assert snap["status"] == "active"
    _cli(running_cloud, "canopy", "server", "rescue", "mob-1")
    _cli(running_cloud, "canopy", "server", "unrescue", "mob-1")
    _cli(running_cloud, "canopy", "server", "rebuild", "--image", "mob-1-snap", "--wait", "mob-1")
    s = show()
    assert s["status"] == "ACTIVE" and s["addresses"] == made["addresses"]
    _cli(running_cloud, "canopy", "server", "delete", "--wait", "mob-1")
    _cli(running_cloud, "canopy", "image", "delete", "mob-1-snap")


def test_openstack_cli_image_members_and_deactivate(running_cloud: RunningCloud, tmp_path: Path) -> None:
    """Share an image with a project (member create/set/delete) and deactivate it, as the CLI types it."""
    data = tmp_path / "blob.raw"
    data.write_bytes(b"canopy" * 1000)
    made = _cli(running_cloud, "canopy", "image", "create", "--disk-format", "raw", "--container-format", "bare",
                "--shared", "--file", str(data), "-f", "json", "cli-shared")
    iid = made["id"]
    demo_images = {i["ID"] for i in _cli(running_cloud, "canopy-demo", "image", "list", "-f", "json")}
    assert iid not in demo_images
    _cli(running_cloud, "canopy", "image", "add", "project", iid, "demo")
    members = _cli(running_cloud, "canopy", "image", "member", "list", "-f", "json", iid)
    assert [m["Status"] for m in members] == ["pending"]
    _cli(running_cloud, "canopy-demo", "image", "set", "--accept", iid)
    demo_images = {i["ID"] for i in _cli(running_cloud, "canopy-demo", "image", "list", "-f", "json")}
    assert iid in demo_images
    _cli(running_cloud, "canopy", "image", "set", "--deactivate", iid)
    assert _cli(running_cloud, "canopy", "image", "show", "-f", "json", iid)["status"] == "deactivated"
    _cli(running_cloud, "canopy", "image", "set", "--activate", iid)
    assert _cli(running_cloud, "canopy", "image", "show", "-f", "json", iid)["status"] == "active"
    _cli(running_cloud, "canopy", "image", "remove", "project", iid, "demo")
    demo_images = {i["ID"] for i in _cli(running_cloud, "canopy-demo", "image", "list", "-f", "json")}
    assert iid not in demo_images
    _cli(running_cloud, "canopy", "image", "delete", iid)


def test_sdk_bulk_networks_subnets_and_ports(demo: Any) -> None:
    """openstacksdk's bulk creates: all made in one call, and one bad element makes none."""
    from openstack.network.v2.network import Network
    from openstack.network.v2.subnet import Subnet

    tag = uuid.uuid4().hex[:6]
    nets = list(Network.bulk_create(demo.network, [{"name": f"bulk-{tag}-a"}, {"name": f"bulk-{tag}-b"}]))
    assert [n.name for n in nets] == [f"bulk-{tag}-a", f"bulk-{tag}-b"]
    subnets = list(Subnet.bulk_create(demo.network, [
        {"network_id": n.id, "ip_version": 4, "cidr": "10.77.0.0/24"} for n in nets]))
    assert {s.cidr for s in subnets} == {"10.77.0.0/24"}
    ports = list(demo.network.create_ports([{"network_id": n.id, "name": f"bulk-{tag}"} for n in nets]))
    assert len(ports) == 2 and all(p.fixed_ips[0]["ip_address"].startswith("10.77.0.") for p in ports)
    with pytest.raises(osexc.BadRequestException):
        list(demo.network.create_ports([{"network_id": nets[0].id, "name": f"bulk-{tag}-bad-1"},
                                        {"network_id": nets[0].id, "mac_address": "not-a-mac"}]))
    assert not list(demo.network.ports(name=f"bulk-{tag}-bad-1"))
    for port in ports:
        demo.network.delete_port(port)
    for net in nets:
        demo.network.delete_network(net)


def test_sdk_multi_nic_server_leaves_nothing_once_deleted(demo: Any) -> None:
    """Boot on two private networks, delete, wait for 404, then delete both subnets and networks at once."""
    from concurrent.futures import ThreadPoolExecutor

    tag = uuid.uuid4().hex[:6]
    nets = [demo.network.create_network(name=f"nic-{tag}-{i}") for i in range(2)]
    subnets = [demo.network.create_subnet(network_id=n.id, ip_version=4, cidr=f"10.88.{i}.0/24")
               for i, n in enumerate(nets)]
    image = demo.image.find_image("canopy-tiny")
    flavor = demo.compute.find_flavor("m1.tiny")
    server = demo.compute.create_server(name=f"nic-{tag}", image_id=image.id, flavor_id=flavor.id,
                                        networks=[{"uuid": n.id} for n in reversed(nets)])
    server = demo.compute.wait_for_server(server, wait=60, interval=0.2)
    assert list(server.addresses) == [n.name for n in reversed(nets)]
    demo.compute.delete_server(server)
    demo.compute.wait_for_delete(server, wait=60, interval=0.2)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(demo.network.delete_subnet, subnets))
        list(pool.map(demo.network.delete_network, nets))
    assert not list(demo.network.ports(device_id=server.id))


def test_openstack_cli_lock_tags_backup_shelve_ports_and_services(running_cloud: RunningCloud,
                                                                   e2e_network: Any) -> None:
    """Issue 16's calls as customers and runbooks type them (each failed before: unknown action, 404 or
    no service named nova-compute)."""
    net, _ = e2e_network
    demo = ("canopy-demo", "--os-compute-api-version", "2.73")
    made = _cli(running_cloud, *demo, "server", "create", "--flavor", "m1.tiny", "--image", "canopy-tiny",
                "--network", net.name, "--wait", "-f", "json", "conf-1")
    assert made["status"] == "ACTIVE" and made["adminPass"]

    def show() -> Any:
        return _cli(running_cloud, *demo, "server", "show", "-f", "json", "conf-1")

    _cli(running_cloud, *demo, "server", "lock", "--reason", "billing", "conf-1")
    assert show()["locked"] is True and show()["locked_reason"] == "billing"
    _cli(running_cloud, *demo, "server", "unlock", "conf-1")
    assert show()["locked"] is False

    _cli(running_cloud, *demo, "server", "set", "--tag", "web", "--tag", "prod", "conf-1")
    assert sorted(show()["tags"]) == ["prod", "web"]
    _cli(running_cloud, *demo, "server", "unset", "--tag", "web", "conf-1")
    assert show()["tags"] == ["prod"]

    backup = _cli(running_cloud, *demo, "server", "backup", "create", "--name", "conf-1-daily", "--type", "daily",
                  "--rotate", "1", "--wait", "-f", "json", "conf-1")
    assert backup["name"] == "conf-1-daily"  # (the CLI prints the image as it was before waiting)
    image = _cli(running_cloud, "canopy-demo", "image", "show", "-f", "json", "conf-1-daily")
    assert image["status"] == "active" and image["properties"]["backup_type"] == "daily"

    port = _cli(running_cloud, "canopy-demo", "port", "create", "--network", net.name, "-f", "json", "conf-port")
    _cli(running_cloud, *demo, "server", "add", "port", "conf-1", port["id"])
    attached = _cli(running_cloud, "canopy-demo", "port", "show", "-f", "json", port["id"])
    assert attached["device_id"] == made["id"]
    _cli(running_cloud, *demo, "server", "remove", "port", "conf-1", port["id"])
    released = _cli(running_cloud, "canopy-demo", "port", "show", "-f", "json", port["id"])
    assert released["device_id"] == "" and released["fixed_ips"] == port["fixed_ips"]

    addresses = show()["addresses"]
    _cli(running_cloud, *demo, "server", "shelve", "--wait", "conf-1")
    assert show()["status"] == "SHELVED_OFFLOADED"
    _cli(running_cloud, *demo, "server", "unshelve", "--wait", "conf-1")
    s = show()
    assert s["status"] == "ACTIVE" and s["addresses"] == addresses

    host = _cli(running_cloud, "canopy", "compute", "service", "list", "--service", "nova-compute", "-f",
                "json")[0]["Host"]
    _cli(running_cloud, "canopy", "compute", "service", "set", "--disable", host, "nova-compute")
    listed = _cli(running_cloud, "canopy", "compute", "service", "list", "--host", host, "-f", "json")
    assert [x["Status"] for x in listed if x["Binary"] == "canopy-agent"] == ["disabled"]
    _cli(running_cloud, "canopy", "compute", "service", "set", "--enable", host, "nova-compute")
    _cli(running_cloud, *demo, "server", "delete", "--wait", "conf-1")
    _cli(running_cloud, "canopy-demo", "image", "delete", "conf-1-daily")
    _cli(running_cloud, "canopy-demo", "port", "delete", port["id"])


def test_openstack_cli_security_groups(running_cloud: RunningCloud, e2e_network: Any) -> None:
    """`openstack security group …` and the server's group commands, exactly as a customer types them."""
    net, _ = e2e_network
    cli = lambda *args: _cli(running_cloud, "canopy-demo", *args)  # noqa: E731
    group = cli("security", "group", "create", "--description", "web servers", "-f", "json", "cli-web")
    assert group["name"] == "cli-web" and group["description"] == "web servers"
    rule = cli("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "80:81", "--ingress",
               "--remote-ip", "203.0.113.0/24", "-f", "json", "cli-web")
    assert (rule["port_range_min"], rule["port_range_max"], rule["remote_ip_prefix"]) == (80, 81, "203.0.113.0/24")
    rules = cli("security", "group", "rule", "list", "-f", "json", "cli-web")
    assert rule["id"] in {r["ID"] for r in rules} and len(rules) == 3  # with the two egress rules
    assert "cli-web" in {g["Name"] for g in cli("security", "group", "list", "-f", "json")}
    shown = cli("security", "group", "show", "-f", "json", "cli-web")
    assert shown["id"] == group["id"]
    made = cli("server", "create", "--flavor", "m1.tiny", "--image", "canopy-tiny", "--network", net.name,
               "--security-group", "cli-web", "--wait", "-f", "json", "cli-sg")
    assert made["status"] == "ACTIVE" and "cli-web" in json.dumps(made["security_groups"])
    cli("server", "add", "security", "group", "cli-sg", "default")
    names = {g["name"] for g in cli("server", "show", "-f", "json", "cli-sg")["security_groups"]}
    assert names == {"cli-web", "default"}
    cli("server", "remove", "security", "group", "cli-sg", "cli-web")
    names = {g["name"] for g in cli("server", "show", "-f", "json", "cli-sg")["security_groups"]}
    assert names == {"default"}
    cli("server", "delete", "--wait", "cli-sg")
    cli("security", "group", "rule", "delete", rule["id"])
    assert rule["id"] not in {r["ID"] for r in cli("security", "group", "rule", "list", "-f", "json", "cli-web")}
    cli("security", "group", "delete", "cli-web")
    assert "cli-web" not in {g["Name"] for g in cli("security", "group", "list", "-f", "json")}
