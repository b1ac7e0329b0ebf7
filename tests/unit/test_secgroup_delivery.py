"""Security groups on their way to the hosts: who is sent what (pure plan), and how an agent's state and
program builder take a group change in (only the firewall flows move, by diff)."""

from __future__ import annotations

from canopy.agent.net import tables as t
from canopy.agent.net.builder import ProgramBuilder
from canopy.agent.net.compiler import compile_host
from canopy.agent.net.fake import FlowTable
from canopy.agent.net.state import DesiredState
from canopy.conductor.sgsync import plan
from canopy.rpc.calls import NetPort, NetSecGroup, NetSegment, NetworkSync

WEB = NetSecGroup(id="sg-web", tag=11, rules=[
    {"mark": 7, "direction": "ingress", "ethertype": 4, "protocol": 6, "port_min": 22, "port_max": 22},
    {"mark": 8, "direction": "ingress", "ethertype": 4, "protocol": 6, "port_min": 5432, "port_max": 5432,
     "remote_group": "sg-db"}])
DB = NetSecGroup(id="sg-db", tag=12, rules=[])


def test_a_rule_change_goes_only_to_the_hosts_holding_the_group() -> None:
    holders = {"hv-1": {"sg-web"}, "hv-2": {"sg-db"}}
    out = plan([WEB], {"sg-db": ["10.0.0.5"]}, holders, {"sg-web"}, {})
    assert set(out) == {"hv-1"}
    assert out["hv-1"].security_groups == [WEB] and out["hv-1"].group_members == {"sg-db": ["10.0.0.5"]}


def test_a_membership_change_goes_only_to_the_hosts_whose_groups_name_it() -> None:
    holders = {"hv-1": {"sg-web"}, "hv-3": {"sg-db"}}  # hv-3 holds a member, but no rule names sg-db there
    out = plan([], {"sg-db": ["10.0.0.5", "10.0.0.6"]}, holders, set(), {"sg-web": {"sg-db"}})
    assert set(out) == {"hv-1"} and out["hv-1"].group_members == {"sg-db": ["10.0.0.5", "10.0.0.6"]}
    assert not out["hv-1"].security_groups


def test_a_deleted_group_is_removed_from_its_hosts() -> None:
    out = plan([], {}, {"hv-1": {"sg-gone"}}, {"sg-gone"}, {})
    assert out["hv-1"].removed_security_groups == ["sg-gone"]


SEG = NetSegment(network_id="net", network_type="flat", physical_network="public")
PORT = NetPort(id="port-a", network_id="net", mac_address="fa:16:3e:00:00:0a", ofport=100,
               fixed_ips=["203.0.113.10"], security_groups=["sg-web"], rev=1.0)


def test_the_agent_compiles_group_changes_as_a_diff_of_firewall_flows_only() -> None:
    state = DesiredState("hv-1")
    assert state.merge(NetworkSync(host="hv-1", full=True, segments=[SEG], ports=[PORT], security_groups=[WEB],
                                   group_members={"sg-db": ["203.0.113.20"]})) is False
    builder = ProgramBuilder()
    program, _ = builder.build(state, None)
    assert program.flows == compile_host(state.host_state()).flows
    table = FlowTable(program.flows)
    ssh = (f"in_port={t.uplink_ofport('public')},tcp,dl_src=02:00:00:00:00:01,dl_dst=fa:16:3e:00:00:0a,"
           "nw_src=192.0.2.1,nw_dst=203.0.113.10,tcp_src=4000,tcp_dst=22")
    pg = ssh.replace("192.0.2.1", "203.0.113.21").replace("tcp_dst=22", "tcp_dst=5432")
    assert table.trace(ssh).ports == [100] and table.trace(pg).ports == []
    # 203.0.113.21 joins sg-db; the ssh rule goes: one message each, applied as diffs
    state.merge(NetworkSync(host="hv-1", group_members={"sg-db": ["203.0.113.20", "203.0.113.21"]}))
    _, diff = builder.build(state, set())
    assert diff is not None and all("203.0.113.21" in k for k in diff.add) and not diff.delete
    table.modify(diff.add, diff.delete)
    assert table.trace(pg).ports == [100]
    web2 = WEB.model_copy(update={"rules": WEB.rules[1:]})
    state.merge(NetworkSync(host="hv-1", security_groups=[web2]))
    _, diff = builder.build(state, set())
    assert diff is not None and diff.delete and all("ct_mark=7" in k or "tcp_dst=22" in k for k in diff.delete)
    table.modify(diff.add, diff.delete)
    assert table.trace(ssh + ",tcp_flags=0x10").ports == []  # its established connection is cut too
    assert table.flows == compile_host(state.host_state()).flows


def test_a_port_in_an_unknown_group_asks_for_a_full_sync() -> None:
    state = DesiredState("hv-1")
    state.merge(NetworkSync(host="hv-1", full=True, segments=[SEG]))
    stranger = PORT.model_copy(update={"security_groups": ["sg-new"]})
    assert state.merge(NetworkSync(host="hv-1", segments=[SEG], ports=[stranger])) is True


def test_member_deltas_join_and_leave_the_lists_held() -> None:
    """A boot's or a delete's membership change comes as a delta (no list read by the conductor)."""
    state = DesiredState("hv-1")
    state.merge(NetworkSync(host="hv-1", full=True, segments=[SEG], ports=[PORT], security_groups=[WEB],
                            group_members={"sg-db": ["203.0.113.20"]}))
    cases = [
        (NetworkSync(host="hv-1", members_added={"sg-db": ["203.0.113.21", "2001:db8::21"]}),
         ("2001:db8::21", "203.0.113.20", "203.0.113.21")),
        (NetworkSync(host="hv-1", members_added={"sg-db": ["203.0.113.21"]}),  # twice: no change
         ("2001:db8::21", "203.0.113.20", "203.0.113.21")),
        (NetworkSync(host="hv-1", members_removed={"sg-db": ["203.0.113.20", "2001:db8::21"]}), ("203.0.113.21",)),
        (NetworkSync(host="hv-1", members_removed={"sg-db": ["198.51.100.9"]}), ("203.0.113.21",)),
    ]
    for msg, want in cases:
        assert state.concerns(msg)
        state.merge(msg)
        assert state.members["sg-db"] == want
        assert dict(state.firewall().members)["sg-db"] == want
