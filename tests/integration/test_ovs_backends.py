"""The network's database side on MariaDB and PostgreSQL: OpenFlow numbers bound concurrently on one
host never collide, a network's ports (a conductor's view) and the desired state read back right, quotas and
address holds hold — and a boot's flows reach its host through the whole stack on each database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from canopy.agent.net import tables as t
from canopy.network import desired, limits
from canopy.network import networks as nets
from canopy.network import ports as pt
from canopy.network.port_record import PortRecord
from canopy.seed import PUBLIC_NETWORK_ID
from tests.clouds import UPLINK, flows_outside_firewall, node_of, ping, switch_of
from tests.clouds import boot_port as boot

pytestmark = pytest.mark.parametrize("backend_url", ["mariadb", "postgresql"], indirect=True)


async def test_concurrent_bindings_on_one_host_get_distinct_ofports(stack: Any) -> None:
    cloud = stack.cloud
    gdb, cdb = cloud.dbs.global_db, cloud.dbs.cell(cloud.cell_name)
    network, subnets = await gdb.read(nets.load_network, PUBLIC_NETWORK_ID)
    now = cloud.clock.now()

    async def one(n: int) -> PortRecord:
        return await cdb.write(lambda conn: pt.create_port(conn, network=network, subnets=subnets, project_id="p",
                                                           host_id="hv-race", now=now, device_id=f"d{n}"))

    made = await asyncio.gather(*(one(n) for n in range(24)))
    numbers = [p.ofport for p in made]
    assert len(set(numbers)) == 24 and min(numbers) >= t.FIRST_VM_OFPORT

    sync = await desired.full_state(cloud.dbs, cloud.cell_name, "hv-race")
    assert sorted(p.ofport for p in sync.ports) == sorted(numbers)
    assert sync.segments[0].network_type == "flat" and sync.segments[0].physical_network == "public"

    # A conductor's view of the network: every bound port with its addresses and its host's, in one query.
    topo = desired.Topology()
    await gdb.read(desired.load_topology, topo, [PUBLIC_NETWORK_ID])
    (ports,) = (await cdb.read(desired.network_ports, [PUBLIC_NETWORK_ID], topo)).values()
    assert sorted(n.port_id for n in ports) == sorted(p.id for p in made)
    assert all(n.host == "hv-race" and len(n.ips) == 1 for n in ports)


async def test_quota_and_hold_on_this_database(stack: Any) -> None:
    cloud = stack.cloud
    gdb, cdb = cloud.dbs.global_db, cloud.dbs.cell(cloud.cell_name)
    network, subnets = await gdb.read(nets.load_network, PUBLIC_NETWORK_ID)
    now = cloud.clock.now()
    quota = limits.AddressPolicy("q", port_limit=3, public_ip_limit=3, public_networks=frozenset({network["id"]}),
                                 hold_s=600)

    async def create(project: str = "q") -> PortRecord:
        policy = quota if project == "q" else limits.AddressPolicy(project, public_networks=quota.public_networks,
                                                                   hold_s=600)
        return await cdb.write(lambda conn: pt.create_port(conn, network=network, subnets=subnets, project_id=project,
                                                           now=now, policy=policy))

    results = await asyncio.gather(*(create() for _ in range(6)), return_exceptions=True)
    made = [r for r in results if isinstance(r, PortRecord)]
    refused = [r for r in results if isinstance(r, limits.OverQuota)]
    assert len(made) == 3 and len(refused) == 3, results
    freed = made[0].fixed_ips[0]
    await cdb.write(lambda conn: pt.delete_port(conn, made[0].id, policy=quota, now=now))

    def held(conn: Any) -> bool:
        other = limits.AddressPolicy("other", hold_s=600)
        return limits.held_by_other(conn, other, freed["subnet_id"], freed["ip_address"], now)

    assert await cdb.read(held)


async def test_boot_flows_reach_the_host_on_this_database(stack: Any) -> None:
    a = await boot(stack, "a", "admin", availability_zone="nova:hv-0001")
    b = await boot(stack, "b", "admin", availability_zone="nova:hv-0002")
    assert switch_of(stack, "hv-0001").trace(ping(a, b)).ports == [UPLINK]
    # No ARP responder on the public network: B's host holds nothing of A outside the firewall (A is a member
    # of the default group B is in), and delivers ARP for B to B.
    node = node_of(stack, "hv-0002")
    assert not flows_outside_firewall(node, a["fixed_ips"][0]["ip_address"])
    b_ip = b["fixed_ips"][0]["ip_address"]
    asked = (f"in_port={UPLINK},arp,dl_src={a['mac_address']},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,"
             f"arp_sha={a['mac_address']},arp_spa={a['fixed_ips'][0]['ip_address']},arp_tpa={b_ip}")
    assert switch_of(stack, "hv-0002").trace(asked).ports == [b["binding:vif_details"]["ofport"]]
