"""Delivering security group changes to the hosts that need them, and only to them.

A rule change of group G goes to the hosts with a port in G (G's new definition). A membership change of
G (a port joined, left, was bound, unbound or re-addressed) goes to the hosts with a port in a group whose
rules name G as remote group (G's member addresses). Every other host hears nothing: a boot reaches other
hosts only through remote groups, and only those holding their members' peers. The agent swaps the
changed groups' flows in one bundle; conntrack is never touched, so other connections are unaffected.

A boot (or a server's delete) reads nothing for this: its ports' addresses go out as deltas, to the hosts a
conductor's view (`TaskEnv.sg_holders`) says hold a group naming the ports' groups.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from canopy.network import secgroups as sg
from canopy.network import sgstate
from canopy.network.port_record import PortRecord
from canopy.rpc.base import BusError, Target
from canopy.rpc.calls import NetSecGroup, NetworkSync, SecurityGroupsChanged

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor.sgsync")


async def announce(bus: Any, group_ids: list[str], members: bool = False) -> None:
    """Tell a conductor (cast) that groups changed; a lost cast is healed by the agents' full syncs."""
    if not group_ids:
        return
    try:
        await bus.cast(Target("conductor"), SecurityGroupsChanged(group_ids=sorted(set(group_ids)), members=members))
    except BusError as exc:
        log.warning("security groups changed, but no conductor was told (%s)", exc)


def plan(defs: list[NetSecGroup], members: dict[str, list[str]], holders: dict[str, set[str]],
         changed: set[str], remote_of: dict[str, set[str]]) -> dict[str, NetworkSync]:
    """Each affected host's message (pure): `holders` host -> the groups of interest its ports are in;
    `changed` the groups whose rules changed; `remote_of` group -> the changed-membership groups its rules
    name."""
    by_id = {d.id: d for d in defs}
    out: dict[str, NetworkSync] = {}
    now = time.time()
    for host, groups in sorted(holders.items()):
        send = [by_id[g] for g in sorted(groups & changed) if g in by_id]
        gone = sorted(g for g in groups & changed if g not in by_id)
        # the members of the remote groups a changed group's rules name come with it
        named = sorted({r for g in groups for r in remote_of.get(g, ())} | set(sgstate.remote_groups(send)))
        if send or gone or named:
            out[host] = NetworkSync(host=host, security_groups=send, removed_security_groups=gone,
                                    group_members={g: members.get(g, []) for g in named}, sent_at=now)
    return out


async def handle(cond: TaskEnv, msg: SecurityGroupsChanged) -> None:
    """Read what changed and cast it to the hosts that need it."""
    changed = set(msg.group_ids)
    if not msg.members:  # a rule change may change who names whom
        cond.sg_holders.clear()

    def global_read(conn: Connection) -> tuple[list[NetSecGroup], dict[str, set[str]]]:
        if msg.members:  # one statement: who names these groups; their definitions did not change
            return [], sgstate.remote_of(conn, sorted(changed))
        return sgstate.group_defs(conn, changed), {}

    defs, remote_of = await cond.dbs.global_db.read_fresh(global_read)
    interest = sorted(changed | set(remote_of))

    named = sorted(changed) if msg.members else sgstate.remote_groups(defs)

    def cell_read(conn: Connection) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
        return sgstate.members(conn, named) if named else {}, sgstate.hosts_of(conn, interest)

    members, holders = await cond.db.read_fresh(cell_read)
    rules_changed = set() if msg.members else changed
    for host, sync in plan(defs, members, holders, rules_changed, remote_of).items():
        try:
            await cond.bus.cast(Target("agent", host), sync)
        except BusError as exc:
            log.warning("security groups for %s not delivered (its next full sync heals): %s", host, exc)


def boot_groups(named: list[str] | None, project_id: str) -> list[str]:
    """The groups of a boot's ports: those the create named (the API resolved and checked them), else the
    project's default group (a payload from before security groups)."""
    return list(named) if named is not None else [sg.default_group_id(project_id)]


HOLDERS_TTL_S = 30.0


async def members_changed(env: TaskEnv, ports: list[PortRecord]) -> None:
    """A boot's new ports: the hosts whose rules name their groups get the new addresses as a delta, built
    from the records (no read of the members); whom to tell comes from the conductor's view."""
    added: dict[str, set[str]] = {}
    for p in ports:
        for gid in p.security_groups:
            added.setdefault(gid, set()).update(ip["ip_address"] for ip in p.fixed_ips)
    if not added:
        return
    await _holders(env, sorted(added))
    for p in ports:  # the port's host now holds its groups: it hears of the groups they name
        for _, (_, naming, hosts) in env.sg_holders.items():
            if p.host_id and naming & set(p.security_groups):
                hosts.add(p.host_id)
    await _send_deltas(env, added, {})


async def members_left(env: TaskEnv, views: list[dict[str, Any]]) -> None:
    """Deleted ports: the hosts whose rules name their groups forget their addresses (a delta)."""
    removed: dict[str, set[str]] = {}
    for v in views:
        for gid in v.get("security_groups") or ():
            removed.setdefault(gid, set()).update(ip["ip_address"] for ip in v.get("fixed_ips") or ())
    if removed:
        await _holders(env, sorted(removed))
        await _send_deltas(env, {}, removed)


async def _holders(env: TaskEnv, group_ids: list[str]) -> None:
    """Load into the view the groups it does not hold (or holds for longer than HOLDERS_TTL_S): who names
    them, and which hosts hold ports in those (two statements per load, none when known)."""
    now = env.clock.monotonic()
    stale = [g for g in group_ids if g not in env.sg_holders or now - env.sg_holders[g][0] > HOLDERS_TTL_S]
    if not stale:
        return
    remote_of = await env.dbs.global_db.read_fresh(sgstate.remote_of, stale)
    naming = {g: {r for r, named in remote_of.items() if g in named} for g in stale}
    every = sorted({r for rs in naming.values() for r in rs})
    held = await env.db.read_fresh(sgstate.hosts_of, every) if every else {}
    for g in stale:
        env.sg_holders[g] = (now, naming[g], {h for h, gs in held.items() if gs & naming[g]})


def forget_holders(env: TaskEnv, group_ids: list[str]) -> None:
    """Rules changed: who names these groups may have changed too."""
    for g in group_ids:
        env.sg_holders.pop(g, None)


async def _send_deltas(env: TaskEnv, added: dict[str, set[str]], removed: dict[str, set[str]]) -> None:
    by_host: dict[str, NetworkSync] = {}
    for kind, changes in (("members_added", added), ("members_removed", removed)):
        for gid, ips in changes.items():
            for host in env.sg_holders.get(gid, (0.0, set(), set()))[2]:
                msg = by_host.setdefault(host, NetworkSync(host=host, sent_at=time.time()))
                getattr(msg, kind)[gid] = sorted(ips)
    for host, msg in sorted(by_host.items()):
        try:
            await env.bus.cast(Target("agent", host), msg)
        except BusError as exc:
            log.warning("security group members for %s not delivered (its next full sync heals): %s", host, exc)
