"""The desired network state of a host, read from the databases: the ports bound to it, the segments
they are on, their QoS limits, and the ports of those segments on other hosts (the neighbors: the ARP
responder's entries and, for VXLAN, the tunnel endpoints). Conductors send it to agents (full, or as
changes); `canopy network flows` compiles it to show what a host should hold.

Topology (networks, their subnets and segments) never changes in a way that moves an existing port:
provider attributes are immutable and a subnet's segment is fixed, so it is cached, and reloaded only
for a network or subnet the cache has not seen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, literal, select, union_all

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.db.engine import Databases
from canopy.network.port_views import chunks, rows_where
from canopy.rpc.calls import NetNeighbor, NetPort, NetSegment, NetworkSync


def epoch(value: dt.datetime | None) -> float:
    """A naive-UTC timestamp as epoch seconds (0 for none)."""
    return value.replace(tzinfo=dt.UTC).timestamp() if value is not None else 0.0


@dataclass
class Topology:
    """Networks, subnets (-> segment) and segments, as far as they have been loaded."""

    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    subnet_segment: dict[str, str | None] = field(default_factory=dict)
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)

    def missing(self, network_ids: Iterable[str], subnet_ids: Iterable[str]) -> bool:
        """Whether a network or a subnet is unknown (then the networks are loaded again)."""
        return any(n not in self.networks for n in network_ids) or any(
            s not in self.subnet_segment for s in subnet_ids)

    def segment(self, network_id: str, fixed_ips: list[dict[str, str]]) -> NetSegment:
        """The segment a port is on: that of its first address's subnet, else the network itself."""
        seg_id = next((self.subnet_segment.get(f["subnet_id"]) for f in fixed_ips
                       if self.subnet_segment.get(f["subnet_id"])), None)
        net = self.networks[network_id]
        src = self.segments.get(seg_id, net) if seg_id else net
        return NetSegment(network_id=network_id, segment_id=seg_id, network_type=src["network_type"],
                          physical_network=src["physical_network"], segmentation_id=src["segmentation_id"],
                          mtu=net["mtu"], arp_responder=bool(net.get("arp_responder", False)))

    def needs_neighbors(self, network_id: str) -> bool:
        """Whether a host serving the network must know its ports on other hosts: for VXLAN (which host
        holds a MAC) or for an ARP responder. A flat network without one needs only the host's own ports."""
        net = self.networks.get(network_id)
        return net is not None and (net["network_type"] == "vxlan" or bool(net.get("arp_responder")))


def load_topology(conn: Connection, topo: Topology, network_ids: list[str], all_networks: bool = False) -> None:
    """Add networks with their subnets and segments to `topo` (global database; every one with `all_networks`)."""
    n, s, sg = g.networks, g.subnets, g.network_segments
    where = (lambda col: col.in_(network_ids)) if not all_networks else (lambda col: col.is_not(None))
    for row in conn.execute(select(n.c.id, n.c.network_type, n.c.physical_network, n.c.segmentation_id, n.c.mtu,
                                   n.c.arp_responder).where(where(n.c.id))).mappings():
        topo.networks[row["id"]] = dict(row)
    for sid, seg in conn.execute(select(s.c.id, s.c.segment_id).where(where(s.c.network_id))):
        topo.subnet_segment[sid] = seg
    for row in conn.execute(select(sg).where(where(sg.c.network_id))).mappings():
        topo.segments[row["id"]] = dict(row)


def qos_limits(conn: Connection, port_policies: dict[str, str], network_ids: list[str]
               ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Bandwidth rules by policy, and network -> policy, for the ports' own policies and their networks'
    (one statement, global database)."""
    r, nq = g.qos_bandwidth_limit_rules, g.network_qos
    cols = (r.c.policy_id, r.c.direction, r.c.max_kbps, r.c.max_burst_kbps)
    own = select(literal(""), *cols).where(r.c.policy_id.in_(sorted(set(port_policies.values())) or [""]))
    nets = (select(nq.c.network_id, *cols).select_from(nq.outerjoin(r, r.c.policy_id == nq.c.policy_id))
            .where(nq.c.network_id.in_(network_ids or [""])))
    rules: dict[str, list[dict[str, Any]]] = {}
    by_network: dict[str, str] = {}
    for network_id, policy_id, direction, kbps, burst in conn.execute(union_all(own, nets)):
        if network_id:
            by_network[network_id] = policy_id or ""
        if direction is not None:
            entry = {"direction": direction, "max_kbps": kbps, "max_burst_kbps": burst}
            if entry not in rules.setdefault(policy_id, []):
                rules[policy_id].append(entry)
    return rules, by_network


def net_port(row: dict[str, Any], fixed_ips: list[dict[str, str]], topo: Topology,
             rules: dict[str, list[dict[str, Any]]], by_network: dict[str, str]) -> NetPort:
    """The agent's view of one bound port."""
    seg = topo.segment(row["network_id"], fixed_ips)
    policy = row.get("qos_policy_id") or by_network.get(row["network_id"]) or ""
    return NetPort(id=row["id"], network_id=row["network_id"], segment_id=seg.segment_id,
                   mac_address=row["mac_address"], ofport=row["ofport"],
                   fixed_ips=[f["ip_address"] for f in fixed_ips],
                   allowed_address_pairs=row["allowed_address_pairs"],
                   port_security_enabled=row["port_security_enabled"], admin_state_up=row["admin_state_up"],
                   bandwidth_limits=rules.get(policy, []), device_id=row["device_id"],
                   project_id=row["project_id"], rev=epoch(row["updated_at"]),
                   # as Neutron's firewall: a port with port security on and in no group is sent no
                   # traffic and sends none (but DHCP, ARP and neighbour discovery); off: no firewall
                   security_groups=list(row.get("security_groups") or []) if row["port_security_enabled"]
                   else None)


def host_ip(conn: Connection, host: str) -> str | None:
    """A host's own address (its tunnel endpoint)."""
    return conn.execute(select(c.hosts.c.host_ip).where(c.hosts.c.name == host)).scalar()


def host_ips(conn: Connection, hosts: list[str]) -> dict[str, str | None]:
    """Hosts' own addresses (their tunnel endpoints)."""
    h = c.hosts.c
    out: dict[str, str | None] = dict.fromkeys(hosts)
    for part in chunks(hosts):
        out.update((name, ip) for name, ip in conn.execute(select(h.name, h.host_ip).where(h.name.in_(part))))
    return out


def neighbors_on(conn: Connection, network_ids: list[str], exclude_host: str, topo: Topology) -> list[NetNeighbor]:
    """Every bound port of these networks on other hosts than `exclude_host`, with its host's address."""
    return [n for ns in network_ports(conn, network_ids, topo, exclude_host).values() for n in ns]


def network_ports(conn: Connection, network_ids: list[str], topo: Topology, exclude_host: str = ""
                  ) -> dict[str, list[NetNeighbor]]:
    """network -> every port of it bound to a host (but `exclude_host`), as its neighbors see it: one
    statement per 500 networks."""
    p, a, h = c.ports, c.ip_allocations, c.hosts
    found: dict[str, dict[str, Any]] = {}
    for part in chunks(network_ids):
        stmt = (select(p.c.id, p.c.network_id, p.c.mac_address, p.c.host_id, p.c.updated_at, a.c.subnet_id,
                       a.c.ip_address, h.c.host_ip)
                .select_from(p.outerjoin(a, a.c.port_id == p.c.id).outerjoin(h, h.c.name == p.c.host_id))
                .where(p.c.network_id.in_(part), p.c.host_id != "", p.c.host_id != exclude_host))
        for r in conn.execute(stmt).mappings():
            entry = found.setdefault(r["id"], {**r, "fixed_ips": []})
            if r["ip_address"] is not None:
                entry["fixed_ips"].append({"subnet_id": r["subnet_id"], "ip_address": r["ip_address"]})
    out: dict[str, list[NetNeighbor]] = {n: [] for n in network_ids}
    for entry in found.values():
        out[entry["network_id"]].append(neighbor_of(entry, topo))
    return out


def neighbor_of(r: dict[str, Any], topo: Topology) -> NetNeighbor:
    """A port on another host, as its neighbors see it."""
    seg = topo.segment(r["network_id"], r["fixed_ips"])
    return NetNeighbor(port_id=r["id"], network_id=r["network_id"], segment_id=seg.segment_id,
                       mac_address=r["mac_address"], ips=[f["ip_address"] for f in r["fixed_ips"]],
                       host=r["host_id"], tunnel_ip=r.get("host_ip"), rev=epoch(r["updated_at"]))


def bound_rows(conn: Connection, host: str) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
    """The ports bound to a host with their addresses (those with an OpenFlow number)."""
    return [(row, ips) for row, ips in rows_where(conn, c.ports.c.host_id == host) if row.get("ofport") is not None]


async def full_state(dbs: Databases, cell_name: str, host: str, topo: Topology | None = None) -> NetworkSync:
    """A host's complete desired network state (three reads: its ports, the topology and QoS, the
    neighbors)."""
    topo = topo if topo is not None else Topology()
    cell = dbs.cell(cell_name)

    def mine(conn: Connection) -> tuple[list[tuple[dict[str, Any], list[dict[str, str]]]], str | None]:
        return bound_rows(conn, host), host_ip(conn, host)

    rows, own_ip = await cell.read_fresh(mine)
    network_ids = sorted({row["network_id"] for row, _ in rows})
    subnet_ids = {f["subnet_id"] for _, ips in rows for f in ips}
    port_policies = {row["id"]: row["qos_policy_id"] for row, _ in rows if row.get("qos_policy_id")}

    def topology_and_qos(conn: Connection) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        if topo.missing(network_ids, subnet_ids):
            load_topology(conn, topo, network_ids)
        return qos_limits(conn, port_policies, network_ids)

    rules, by_network = await dbs.global_db.read_fresh(topology_and_qos)
    rows = [(row, ips) for row, ips in rows if row["network_id"] in topo.networks]
    ports = [net_port(row, ips, topo, rules, by_network) for row, ips in rows]
    segments = {(row["network_id"], seg.segment_id): seg
                for row, ips in rows for seg in (topo.segment(row["network_id"], ips),)}
    # A flat network without an ARP responder needs only the host's own ports: no neighbor is read for it.
    neighborly = [n for n in network_ids if topo.needs_neighbors(n)]
    neighbors = await cell.read_fresh(neighbors_on, neighborly, host, topo) if neighborly else []
    from canopy.network import sgstate

    wanted = sorted({gid for p in ports for gid in p.security_groups or ()})
    defs = await dbs.global_db.read_fresh(sgstate.group_defs, wanted) if wanted else []
    remote = sgstate.remote_groups(defs)
    members = await cell.read_fresh(sgstate.members, remote) if remote else {}
    return NetworkSync(host=host, full=True, segments=list(segments.values()), ports=ports, neighbors=neighbors,
                       complete_networks=network_ids, tunnel_ip=own_ip, security_groups=defs, group_members=members)
