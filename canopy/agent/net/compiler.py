"""The flow compiler: a pure function from one host's desired network state to the complete set of
OpenFlow rules and meters of its integration bridge (the layout is in `tables`).

The flows come in fragments: those of one VM port, of one segment on this host, of one neighbor (a
port on another host), and of the host itself. A fragment depends only on its own input value, so the
optional `cache` returns the fragments of unchanged inputs without recomputing them; the result is the
same with or without it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from canopy.agent.net import tables as t
from canopy.agent.net.model import (
    HostNetState,
    Meter,
    Neighbor,
    Program,
    Segment,
    VmPort,
)
from canopy.agent.net.secgroups import firewall_flows, host_sg_flows

Fragment = tuple[tuple[str, int, str], ...]  # (key, cookie, actions)

_CANOPY = t.COOKIE_CANOPY
_TO_ACL = f"goto_table:{t.EGRESS_ACL}"
_TO_INGRESS = f"goto_table:{t.INGRESS_ACL}"


def compile_host(state: HostNetState, cache: dict[object, Fragment] | None = None) -> Program:
    """Every flow and meter of the host's integration bridge."""
    memo: dict[object, Fragment] = {} if cache is None else cache
    used: dict[object, Fragment] = {}
    flows: dict[str, tuple[int, str]] = dict(HOST)
    ports = tuple(p for p in state.ports if p.up)
    segments = {p.segment.key: p.segment for p in ports}
    tunnels: dict[int, set[str]] = defaultdict(set)
    for n in state.neighbors:
        seg = segments.get(n.key)
        if seg is None:
            continue
        tunnel = tunnel_of(n.tunnel_ip, seg, state.tunnel_ip)
        if tunnel:
            tunnels[n.key].add(tunnel)
        _merge(flows, _cached(memo, used, (n, seg), neighbor_flows))
    # after the neighbors: a local port wins a stale entry
    flows.update(local_flows(ports, segments, {k: sorted(v) for k, v in tunnels.items()}, memo, used))
    flows.update(firewall_flows(ports, state.firewall))
    if cache is not None:  # keep only what this state used, so the cache never outgrows the host
        cache.clear()
        cache.update(used)
    return Program(flows=flows, meters=port_meters(ports), ports=tuple(sorted(state.ports, key=lambda p: p.ofport)),
                   firewall=state.firewall)


def local_flows(ports: tuple[VmPort, ...], segments: dict[int, Segment], tunnels: dict[int, list[str]],
                memo: dict[object, Fragment], used: dict[object, Fragment]) -> dict[str, tuple[int, str]]:
    """The flows of the host's own (up) ports and of their segments (`tunnels`: each VXLAN segment's other
    hosts, sorted). They win over a neighbor's flow with the same key."""
    flows: dict[str, tuple[int, str]] = {}
    by_segment: dict[int, list[VmPort]] = defaultdict(list)
    for p in ports:
        by_segment[p.segment.key].append(p)
        _merge(flows, _cached(memo, used, p, port_flows))
    for key, members in by_segment.items():
        flows.update(_entries(segment_flows(segments[key], members, tunnels.get(key, []))))
    return flows


def tunnel_of(tunnel_ip: str | None, seg: Segment, own_ip: str | None) -> str | None:
    """The tunnel endpoint a neighbor (on the host at `tunnel_ip`) adds to its VXLAN segment's flood list
    (None: it adds none)."""
    return tunnel_ip if seg.network_type == "vxlan" and tunnel_ip and tunnel_ip != own_ip else None


def _cached(memo: dict[object, Fragment], used: dict[object, Fragment], key: object, build: object) -> Fragment:
    fragment = memo.get(key)
    if fragment is None:
        fragment = build(*key) if isinstance(key, tuple) else build(key)  # type: ignore[operator]
    used[key] = fragment
    return fragment


def _merge(flows: dict[str, tuple[int, str]], fragment: Fragment) -> None:
    for key, cookie, actions in fragment:
        flows[key] = (cookie, actions)


def _entries(fragment: Iterable[tuple[str, int, str]]) -> dict[str, tuple[int, str]]:
    return {key: (cookie, actions) for key, cookie, actions in fragment}


# -- the host ----------------------------------------------------------------------------------------


def host_flows() -> Fragment:
    """Table defaults and the drops that apply to every VM port with port security."""
    ps = t.PORT_SECURITY
    return (
        (f"table={t.CLASSIFY},priority=0", _CANOPY, "drop"),
        (f"table={ps},priority=0", _CANOPY, "drop"),
        # A VM may not act as a DHCP server or a router on the shared segment.
        (f"table={ps},priority=200,udp,udp_src=67", _CANOPY, "drop"),
        (f"table={ps},priority=200,udp6,udp_src=547", _CANOPY, "drop"),
        (f"table={ps},priority=200,icmp6,icmp_type=134", _CANOPY, "drop"),
        (f"table={ps},priority=200,icmp6,icmp_type=137", _CANOPY, "drop"),
        # Neighbour advertisements pass only for the port's own targets (allowed at priority 120).
        (f"table={ps},priority=110,icmp6,icmp_type=136", _CANOPY, "drop"),
        (f"table={t.EGRESS_ACL},priority=0", _CANOPY, f"goto_table:{t.ARP_ND}"),
        (f"table={t.ARP_ND},priority=0", _CANOPY, f"goto_table:{t.FORWARD}"),
        (f"table={t.FORWARD},priority=0", _CANOPY, "drop"),
        (f"table={t.INGRESS_ACL},priority=0", _CANOPY, f"goto_table:{t.DELIVER}"),
        (f"table={t.DELIVER},priority=0", _CANOPY, "drop"),
        *host_sg_flows(),
    )


# -- one VM port -------------------------------------------------------------------------------------


def port_flows(p: VmPort) -> Fragment:
    """The flows of one VM port: classification, anti-spoofing, ARP/ND delivery, forwarding, output."""
    cookie = t.port_cookie(p.ofport)
    key, n = p.segment.key, p.ofport
    meter = f"meter:{t.egress_meter(n)}," if p.egress else ""
    # Port security off (admin only): forwarded plainly, no source checks.
    next_table = t.PORT_SECURITY if p.security else t.ARP_ND
    first = f"{meter}set_field:{key}->{t.REG_NET},set_field:{t.ORIGIN_VM}->{t.REG_ORIGIN},goto_table:{next_table}"
    out: list[tuple[str, int, str]] = [(f"table={t.CLASSIFY},priority=100,in_port={n}", cookie, first)]
    if p.security:
        out.extend(spoofing_flows(p, cookie))
    deliver = f"set_field:{n}->{t.REG_OUT},{_TO_INGRESS}"
    arp = f"table={t.ARP_ND},priority="
    for ip in p.ipv4:
        if p.segment.arp_responder:  # else the request reaches the owner (priority 90), which answers
            out.append((f"{arp}100,{t.REG_NET}={key},{t.REG_ORIGIN}={t.ORIGIN_VM},arp,arp_op=1,arp_tpa={ip}",
                        cookie, arp_reply(p.mac, ip)))
        out.append((f"{arp}90,{t.REG_NET}={key},arp,arp_op=1,arp_tpa={ip}", cookie, deliver))
    for ip in (*p.ipv6, link_local(p.mac)):
        out.append((f"{arp}90,{t.REG_NET}={key},icmp6,icmp_type=135,nd_target={ip}", cookie, deliver))
    out.append((f"table={t.FORWARD},priority=100,{t.REG_NET}={key},dl_dst={p.mac}", cookie, deliver))
    meter_in = f"meter:{t.ingress_meter(n)}," if p.ingress else ""
    out.append((f"table={t.DELIVER},priority=100,{t.REG_OUT}={n}", cookie, f"{meter_in}output:{n}"))
    return tuple(out)


def spoofing_flows(p: VmPort, cookie: int) -> list[tuple[str, int, str]]:
    """PORT_SECURITY: only the port's MAC, and with it only its addresses (and allowed address pairs)."""
    head = f"table={t.PORT_SECURITY},priority="
    src = f"in_port={p.ofport},dl_src={p.mac}"
    out = [(f"{head}150,{src},udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,udp_src=68,udp_dst=67", cookie, _TO_ACL),
           (f"{head}100,{src},icmp6,ipv6_src=::", cookie, _TO_ACL)]  # duplicate address detection
    for ip in p.ipv4:
        out.append((f"{head}100,{src},ip,nw_src={ip}", cookie, _TO_ACL))
        out.append((f"{head}100,{src},arp,arp_sha={p.mac},arp_spa={ip}", cookie, _TO_ACL))
    v6 = (*p.ipv6, link_local(p.mac))
    for ip in v6:
        out.append((f"{head}100,{src},ipv6,ipv6_src={ip}", cookie, _TO_ACL))
    out.extend(advert_flows(head, src, v6, v6, cookie))
    for pair in p.pairs:
        psrc = f"in_port={p.ofport},dl_src={pair.mac}"
        if pair.version == 4:
            out.append((f"{head}90,{psrc},ip,nw_src={pair.cidr}", cookie, _TO_ACL))
            out.append((f"{head}90,{psrc},arp,arp_sha={pair.mac},arp_spa={pair.cidr}", cookie, _TO_ACL))
        else:
            out.append((f"{head}90,{psrc},ipv6,ipv6_src={pair.cidr}", cookie, _TO_ACL))
            out.extend(advert_flows(f"{head}", psrc, (pair.cidr,), (pair.cidr,), cookie, priority=115))
    return out


def advert_flows(head: str, src: str, sources: Iterable[str], targets: Iterable[str], cookie: int,
                 priority: int = 120) -> list[tuple[str, int, str]]:
    """Neighbour advertisements from one of the port's addresses, for one of its addresses."""
    return [(f"{head}{priority},{src},icmp6,icmp_type=136,ipv6_src={s},nd_target={tg}", cookie, _TO_ACL)
            for s in sources for tg in targets]


def arp_reply(mac: str, ip: str) -> str:
    """Actions that turn an ARP request for `ip` into the reply `ip is-at mac`, sent back where it came."""
    return (f"move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{mac}->eth_src,set_field:2->arp_op,"
            f"move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:{mac}->arp_sha,"
            f"move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:{ip}->arp_spa,IN_PORT")


def link_local(mac: str) -> str:
    """The IPv6 link-local address a NIC derives from its MAC (modified EUI-64)."""
    b = [int(x, 16) for x in mac.split(":")]
    return f"fe80::{(b[0] ^ 2) << 8 | b[1]:x}:{b[2]:x}ff:fe{b[3]:02x}:{b[4] << 8 | b[5]:x}"


def port_meters(ports: Iterable[VmPort]) -> dict[int, Meter]:
    """The QoS meters of the ports with a bandwidth limit."""
    meters: dict[int, Meter] = {}
    for p in ports:
        if p.egress:
            meters[t.egress_meter(p.ofport)] = Meter.limiting(t.egress_meter(p.ofport), p.egress.max_kbps,
                                                              p.egress.max_burst_kbps)
        if p.ingress:
            meters[t.ingress_meter(p.ofport)] = Meter.limiting(t.ingress_meter(p.ofport), p.ingress.max_kbps,
                                                               p.ingress.max_burst_kbps)
    return meters


# -- a neighbor (a port of the segment on another host) ------------------------------------------------


def neighbor_flows(n: Neighbor, seg: Segment) -> Fragment:
    """The ARP responder entries of another host's port (when the segment has one), and for VXLAN the
    tunnel to its host."""
    out = [(f"table={t.ARP_ND},priority=100,{t.REG_NET}={n.key},{t.REG_ORIGIN}={t.ORIGIN_VM},arp,arp_op=1,"
            f"arp_tpa={ip}", t.NEIGHBOR_COOKIE, arp_reply(n.mac, ip)) for ip in n.ipv4 if seg.arp_responder]
    if seg.network_type == "vxlan" and n.tunnel_ip:
        out.append((f"table={t.FORWARD},priority=100,{t.REG_NET}={n.key},{t.REG_ORIGIN}={t.ORIGIN_VM},"
                    f"dl_dst={n.mac}", t.NEIGHBOR_COOKIE, f"{_tunnel_to(seg, n.tunnel_ip)},output:{t.TUNNEL_OFPORT}"))
    return tuple(out)


def _tunnel_to(seg: Segment, ip: str) -> str:
    return f"set_field:{seg.vni}->tun_id,set_field:{ip}->tun_dst"


# -- a segment on this host ----------------------------------------------------------------------------


def segment_flows(seg: Segment, ports: list[VmPort], tunnels: list[str]) -> list[tuple[str, int, str]]:
    """Where the segment's traffic enters and leaves the host, and what little is flooded."""
    key = seg.key
    net = f"{t.REG_NET}={key}"
    out: list[tuple[str, int, str]] = []
    to_open = _flood(key, t.FLOOD_OPEN, [f"output:{p.ofport}" for p in sorted(ports, key=lambda p: p.ofport)
                                         if not p.security], out)
    if seg.network_type == "vxlan":
        origin, entry = t.ORIGIN_TUNNEL, f"in_port={t.TUNNEL_OFPORT},tun_id={seg.vni}"
        flood = _flood(key, t.FLOOD_TUNNELS, [f"{_tunnel_to(seg, ip)},output:{t.TUNNEL_OFPORT}" for ip in tunnels],
                       out)
        out_of_host = ""  # every MAC of the network is known: unknown unicast goes nowhere
    else:
        origin, entry = t.ORIGIN_UPLINK, f"in_port={seg.uplink}"
        flood = out_of_host = f"output:{seg.uplink}"
    out.append((f"table={t.CLASSIFY},priority=100,{entry}", _CANOPY,
                f"set_field:{key}->{t.REG_NET},set_field:{origin}->{t.REG_ORIGIN},goto_table:{t.ARP_ND}"))
    # ARP requests and solicitations from outside reach only the owner (priority 90) or nobody.
    out.append((f"table={t.ARP_ND},priority=60,{net},{t.REG_ORIGIN}={origin},arp,arp_op=1", _CANOPY, "drop"))
    out.append((f"table={t.ARP_ND},priority=60,{net},{t.REG_ORIGIN}={origin},icmp6,icmp_type=135", _CANOPY, "drop"))
    out.extend(_pair_delivery(key, ports))
    vm = f"table={t.FORWARD},priority={{}},{net},{t.REG_ORIGIN}={t.ORIGIN_VM}"
    out.append((f"{vm.format(20)},dl_dst={t.MULTICAST}", _CANOPY, _join(flood, to_open)))
    if out_of_host:
        out.append((vm.format(10), _CANOPY, out_of_host))
    outside = f"table={t.FORWARD},priority={{}},{net},{t.REG_ORIGIN}={origin}"
    everyone = _flood(key, t.FLOOD_EVERYONE, [f"output:{n}" for n in sorted(p.ofport for p in ports)], out)
    if seg.network_type == "flat":  # replies of a DHCP server and router adverts on the physical network
        out.append((f"{outside.format(50)},dl_dst={t.MULTICAST},udp,udp_src=67,udp_dst=68", _CANOPY, everyone))
        out.append((f"{outside.format(50)},dl_dst={t.MULTICAST},icmp6,icmp_type=134", _CANOPY, everyone))
    out.append((f"{outside.format(20)},dl_dst={t.MULTICAST}", _CANOPY, to_open or "drop"))
    return out


def _flood(key: int, kind: int, actions: list[str], out: list[tuple[str, int, str]]) -> str:
    """The actions of an output list: inline when short, else chunks in the FLOOD table (added to `out`)
    that the returned actions visit one after the other."""
    if len(actions) <= t.FLOOD_CHUNK:
        return ",".join(actions)
    visits = []
    for i in range(0, len(actions), t.FLOOD_CHUNK):
        chunk = kind * 1000 + i // t.FLOOD_CHUNK
        out.append((f"table={t.FLOOD},priority=100,{t.REG_NET}={key},{t.REG_FLOOD}={chunk}", _CANOPY,
                    ",".join(actions[i:i + t.FLOOD_CHUNK])))
        visits.append(f"set_field:{chunk}->{t.REG_FLOOD},resubmit(,{t.FLOOD})")
    return ",".join(visits)


def _pair_delivery(key: int, ports: list[VmPort]) -> list[tuple[str, int, str]]:
    """Allowed address pairs may be shared (a VRRP address): ARP, ND and unicast for them go to every
    local port that holds the pair."""
    by_cidr: dict[tuple[int, str], list[int]] = defaultdict(list)
    by_mac: dict[str, list[int]] = defaultdict(list)
    for p in ports:
        for pair in p.pairs:
            by_cidr[(pair.version, pair.cidr)].append(p.ofport)
            if pair.mac != p.mac:
                by_mac[pair.mac].append(p.ofport)
    out = []
    for (version, cidr), owners in sorted(by_cidr.items()):
        match = f"arp,arp_op=1,arp_tpa={cidr}" if version == 4 else f"icmp6,icmp_type=135,nd_target={cidr}"
        out.append((f"table={t.ARP_ND},priority=80,{t.REG_NET}={key},{match}", _CANOPY, _to_each(owners)))
    for mac, owners in sorted(by_mac.items()):
        out.append((f"table={t.FORWARD},priority=90,{t.REG_NET}={key},dl_dst={mac}", _CANOPY, _to_each(owners)))
    return out


def _to_each(ofports: list[int]) -> str:
    return ",".join(f"set_field:{n}->{t.REG_OUT},resubmit(,{t.INGRESS_ACL})" for n in sorted(set(ofports)))


def _join(*parts: str) -> str:
    return ",".join(p for p in parts if p) or "drop"


HOST = _entries(host_flows())
