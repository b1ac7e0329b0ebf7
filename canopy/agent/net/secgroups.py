"""Security groups compiled into flows: a stateful firewall per port, with conntrack (pure).

For a port with the firewall on, its IP traffic is sent through conntrack in the port's own zone (its
OpenFlow number), in each direction:

    …_ACL ─ ct(zone=port) ─▶ …_CT ─ invalid: drop
                                  └ for each group of the port: REG_GROUP=tag, resubmit(…_RULES)
                                    (a rule that allows the packet leaves its mark in REG_MARK)
                             ─▶ …_COMMIT ─ REG_MARK=0: drop
                                          ├ new: ct(commit, ct_mark=REG_MARK), on
                                          └ established/related: on

In …_RULES a group's rules are one flow each for new connections (a port range is a few masked
matches), and one flow each letting through the established connections whose ct_mark is the rule's:
a removed rule takes that flow with it, so the connections it allowed stop too, while conntrack itself
is never flushed (an unrelated change leaves every connection as it was). A remote-group rule is a
conjunctive match: the rule's match is one dimension, the remote group's member addresses the other,
so a group of N members referenced by R rules costs N + R flows, not N × R.

Flow counts are linear in ports (6 each), rules (3 each) and remote members (one per address, shared
by every rule that names the group).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from canopy.agent.net import tables as t
from canopy.agent.net.model import Firewall, SecGroup, SgRule, VmPort

Flows = dict[str, tuple[int, str]]

ACL = {"egress": t.EGRESS_ACL, "ingress": t.INGRESS_ACL}
CT = {"egress": t.EGRESS_CT, "ingress": t.INGRESS_CT}
RULES = {"egress": t.EGRESS_RULES, "ingress": t.INGRESS_RULES}
COMMIT = {"egress": t.EGRESS_COMMIT, "ingress": t.INGRESS_COMMIT}
NEXT = {"egress": t.ARP_ND, "ingress": t.DELIVER}
PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
PRIO_ESTABLISHED, PRIO_RULE, PRIO_CONJ = 90, 80, 70
SG_COOKIE = t.COOKIE_CANOPY | (2 << 32)
MEMBER_COOKIE = t.COOKIE_CANOPY | (3 << 32)
_ZONE = f"NXM_NX_{t.REG_ZONE.upper()}[0..15]"
_COMMIT = (f"ct(commit,zone={_ZONE},exec(move:NXM_NX_{t.REG_MARK.upper()}[]->NXM_NX_CT_MARK[]))")
# What a port may always send and receive, as Neutron allows it whatever the rules: DHCP and the
# ICMPv6 of neighbour discovery and multicast listeners.
_ALWAYS = {
    "egress": ("udp,udp_src=68,udp_dst=67", "udp6,udp_src=546,udp_dst=547",
               *(f"icmp6,icmp_type={n}" for n in (130, 131, 132, 133, 135, 136, 143))),
    "ingress": ("udp,udp_src=67,udp_dst=68", "udp6,udp_src=547,udp_dst=546",
                *(f"icmp6,icmp_type={n}" for n in (130, 131, 132, 133, 134, 135, 136, 143))),
}


def host_sg_flows() -> tuple[tuple[str, int, str], ...]:
    """The firewall's flows that do not depend on any port or group."""
    out: list[tuple[str, int, str]] = []
    for d in ("egress", "ingress"):
        out += [(f"table={ACL[d]},priority=110,{m}", SG_COOKIE, f"goto_table:{NEXT[d]}") for m in _ALWAYS[d]]
        out.append((f"table={CT[d]},priority=200,ct_state=+inv+trk", SG_COOKIE, "drop"))
        out.append((f"table={CT[d]},priority=0", SG_COOKIE, "drop"))
        out.append((f"table={RULES[d]},priority=0", SG_COOKIE, "drop"))  # a miss: this group allows nothing
        out.append((f"table={COMMIT[d]},priority=100,{t.REG_MARK}=0", SG_COOKIE, "drop"))
        out += [(f"table={COMMIT[d]},priority=50,ct_state=+new+trk,{eth}", SG_COOKIE,  # ct() needs the ethertype
                 f"{_COMMIT},goto_table:{NEXT[d]}") for eth in ("ip", "ipv6")]
        out.append((f"table={COMMIT[d]},priority=10", SG_COOKIE, f"goto_table:{NEXT[d]}"))
    return tuple(out)


def firewall_flows(ports: Iterable[VmPort], fw: Firewall, memo: dict[object, Flows] | None = None,
                   used_memo: dict[object, Flows] | None = None) -> Flows:
    """Every flow of the firewall of these (up) ports: theirs, their groups', their remote groups'.
    Fragments are looked up in `memo` and those used recorded in `used_memo` (to keep the next memo)."""
    cache: dict[object, Flows] = {} if memo is None else memo
    kept: dict[object, Flows] = {} if used_memo is None else used_memo
    groups = {g.id: g for g in fw.groups}
    flows: Flows = {}
    used: dict[str, SecGroup] = {}
    for p in ports:
        if not p.firewalled:
            continue
        mine = [groups[g] for g in p.groups or () if g in groups]
        used.update((g.id, g) for g in mine)
        flows.update(_memo(cache, kept, ("port", p.ofport, tuple(g.tag for g in mine)), port_sg_flows))
    for g in sorted(used.values(), key=lambda g: g.tag):
        flows.update(_memo(cache, kept, g, group_flows))
    flows.update(member_flows(used.values(), dict(fw.members)))
    return flows


def _memo(cache: dict[object, Flows], kept: dict[object, Flows], key: object, build: object) -> Flows:
    found = cache.get(key)
    if found is None:
        found = build(*key[1:]) if isinstance(key, tuple) else build(key)  # type: ignore[operator]
    kept[key] = found
    return found


def port_sg_flows(ofport: int, tags: tuple[int, ...]) -> Flows:
    """A port's way into conntrack and through each of its groups, both directions."""
    cookie, o = t.port_cookie(ofport), str(ofport)
    return {k.replace("\0", o): (cookie, a.replace("\0", o)) for k, a in _port_template(tags)}


_PORT_TEMPLATES: dict[tuple[int, ...], tuple[tuple[str, str], ...]] = {}


def _port_template(tags: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    """The flows of a port in groups `tags`, with NUL where the port's number goes: made once per set of
    groups (a host has few), filled in per port by a string replace (a compile of 5,000 ports makes 30,000
    of these flows, and formatting each anew was most of the firewall's time)."""
    found = _PORT_TEMPLATES.get(tags)
    if found is not None:
        return found
    out: list[tuple[str, str]] = []
    for d, who in (("egress", "in_port=\0"), ("ingress", f"{t.REG_OUT}=\0")):
        into = f"set_field:\0->{t.REG_ZONE},ct(table={CT[d]},zone={_ZONE})"
        out.append((f"table={ACL[d]},priority=100,{who},ip", into))
        out.append((f"table={ACL[d]},priority=100,{who},ipv6", into))
        ask = [f"set_field:0->{t.REG_MARK}"]
        ask += [f"set_field:{tag}->{t.REG_GROUP},resubmit(,{RULES[d]})" for tag in tags]
        out.append((f"table={CT[d]},priority=100,{who}", ",".join([*ask, f"goto_table:{COMMIT[d]}"])))
    if len(_PORT_TEMPLATES) > 10_000:  # bounded: group sets come and go
        _PORT_TEMPLATES.clear()
    _PORT_TEMPLATES[tags] = found = tuple(out)
    return found


def group_flows(g: SecGroup) -> Flows:
    """A group's rules: what new connections each allows, and the established ones it keeps."""
    out: Flows = {}
    conj: dict[str, list[str]] = defaultdict(list)
    cookie = SG_COOKIE | g.tag
    head = f"{t.REG_GROUP}={g.tag}"
    for r in sorted(g.rules, key=lambda r: r.mark):
        allow = f"set_field:{r.mark}->{t.REG_MARK}"
        for d in ("egress", "ingress"):  # a connection's replies travel the other way
            out[f"table={RULES[d]},priority={PRIO_ESTABLISHED},{head},ct_state=-new+trk,ct_mark={r.mark}"] = (
                cookie, allow)
        table = RULES[r.direction]
        for match in rule_matches(r):
            if r.remote_group is None:
                out.setdefault(f"table={table},priority={PRIO_RULE},{head},ct_state=+new+trk,{match}",
                               (cookie, allow))
            else:
                conj[f"table={table},priority={PRIO_CONJ},{head},ct_state=+new+trk,{match}"].append(
                    f"conjunction({r.mark},1/2)")
        if r.remote_group is not None:
            out[f"table={table},priority={PRIO_CONJ},conj_id={r.mark}"] = (cookie, allow)
    out.update((k, (cookie, ",".join(v))) for k, v in conj.items())
    return out


def member_flows(groups: Iterable[SecGroup], members: dict[str, tuple[str, ...]]) -> Flows:
    """The second dimension of the remote-group rules: one flow per remote member address and
    direction, carrying the conjunction of every rule that names a group holding it."""
    # (remote group, direction, ethertype) -> the conjunctions of the rules naming it: then each member
    # address is visited once per such key, not once per rule (linear in members + rules)
    wanted: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for g in groups:
        for r in g.rules:
            if r.remote_group is not None:
                wanted[(r.remote_group, r.direction, r.ethertype)].add(f"conjunction({r.mark},2/2)")
    split: dict[str, tuple[list[str], list[str]]] = {}  # group -> its IPv4 and its IPv6 member addresses
    out: Flows = {}
    for (gid, direction, ethertype), conj in wanted.items():
        if gid not in split:
            ips = members.get(gid, ())
            split[gid] = ([ip for ip in ips if ":" not in ip], [ip for ip in ips if ":" in ip])
        head, value = _member_head(direction, ethertype), (MEMBER_COOKIE, ",".join(sorted(conj)))
        new = {head + ip: value for ip in split[gid][ethertype == 6]}
        for key in new.keys() & out.keys():  # an address in two remote groups named the same way
            new[key] = (MEMBER_COOKIE, ",".join(sorted(set(out[key][1].split(",")) | conj)))
        out.update(new)
    return out


def _member_head(direction: str, ethertype: int) -> str:
    side = "src" if direction == "ingress" else "dst"
    field = f"ipv6_{side}" if ethertype == 6 else f"nw_{side}"
    return f"table={RULES[direction]},priority={PRIO_CONJ},{'ipv6' if ethertype == 6 else 'ip'},{field}="


def rule_matches(r: SgRule) -> list[str]:
    """A rule's match, as one or more flow matches (a port range becomes several masked ones)."""
    v6 = r.ethertype == 6
    proto = r.protocol
    extra = ""
    if r.prefix and not r.prefix.endswith("/0"):
        side = "src" if r.direction == "ingress" else "dst"
        extra = f",{'ipv6' if v6 else 'nw'}_{side}={r.prefix}"
    if proto is None:
        return [f"{'ipv6' if v6 else 'ip'}{extra}"]
    if proto in PORT_PROTOCOLS:
        name = PORT_PROTOCOLS[proto]
        base = f"{name}{'6' if v6 else ''}{extra}"
        if r.port_min is None:
            return [base]
        hi = r.port_max if r.port_max is not None else r.port_min
        return [base + m for m in port_range_matches(f"{name}_dst", r.port_min, hi)]
    if proto in (1, 58):
        base = f"{'icmp6' if v6 else 'icmp'}{extra}"
        if r.port_min is not None:
            base += f",icmp_type={r.port_min}"
            if r.port_max is not None:
                base += f",icmp_code={r.port_max}"
        return [base]
    return [f"{'ipv6' if v6 else 'ip'},nw_proto={proto}{extra}"]


def port_range_matches(field: str, lo: int, hi: int) -> list[str]:
    """The fewest masked matches of `field` that cover exactly [lo, hi]."""
    out = []
    for value, mask in port_masks(lo, hi):
        if mask == 0xFFFF:
            out.append(f",{field}={value}")
        elif mask:
            out.append(f",{field}={value:#x}/{mask:#x}")
        else:
            out.append("")  # every port
    return out


def port_masks(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi] as aligned power-of-two blocks (value, mask): the minimal prefix cover."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while lo + size - 1 > hi:
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


def rule_text(r: SgRule) -> str:
    """A rule in words, for explanations."""
    proto = {None: "any", 1: "icmp", 58: "icmpv6", 6: "tcp", 17: "udp", 132: "sctp"}.get(r.protocol, str(r.protocol))
    ports = ""
    if r.port_min is not None:
        if r.protocol in (1, 58):
            ports = f" type {r.port_min}" + (f" code {r.port_max}" if r.port_max is not None else "")
        else:
            ports = f" port {r.port_min}" + (f"-{r.port_max}" if r.port_max not in (None, r.port_min) else "")
    remote = (f" remote group {r.remote_group}" if r.remote_group else
              f" {'from' if r.direction == 'ingress' else 'to'} {r.prefix}" if r.prefix else "")
    return f"{r.direction} IPv{r.ethertype} {proto}{ports}{remote}"
