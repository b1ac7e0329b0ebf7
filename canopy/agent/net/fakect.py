"""The fake switch's connection tracker: what `ct()` does to a packet, with Open vSwitch's states.

A connection is known once committed; a packet of it is +est (its original direction once a reply was
seen, or any reply: +est+rpl), a packet of no connection +new, a TCP packet without SYN of no
connection +inv. Entries live as long as the tracker (as in a switch: replacing flows keeps them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

CT_BITS = {"new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10, "trk": 0x20}  # as OVS numbers them
_PING = {8: 0, 0: 8, 128: 129, 129: 128}  # echo request <-> reply: one ICMP "connection"
Tuple = tuple[int, int, int, int, int, int]


@dataclass
class Entry:
    """One tracked connection: its original direction, its mark, whether a reply was seen."""

    orig: Tuple
    mark: int
    replied: bool = False


@dataclass
class Conntrack:
    """Connections by (zone, tuple) in both directions."""

    entries: dict[tuple[int, Tuple], Entry] = field(default_factory=dict)

    @staticmethod
    def tuple_of(pkt: Mapping[str, int]) -> tuple[Tuple, Tuple]:
        """The packet's tuple and its reply's."""
        v6 = pkt.get("dl_type") == 0x86DD
        src, dst = (pkt.get("ipv6_src", 0), pkt.get("ipv6_dst", 0)) if v6 else (pkt.get("nw_src", 0),
                                                                               pkt.get("nw_dst", 0))
        proto = pkt.get("nw_proto", 0)
        if proto in (1, 58):
            kind = pkt.get("icmp_type", 0)
            low = min(kind, _PING.get(kind, kind))
            return (pkt.get("dl_type", 0), proto, src, dst, low, 0), (pkt.get("dl_type", 0), proto, dst, src, low, 0)
        sp, dp = pkt.get("udp_src", 0), pkt.get("udp_dst", 0)
        return (pkt.get("dl_type", 0), proto, src, dst, sp, dp), (pkt.get("dl_type", 0), proto, dst, src, dp, sp)

    def lookup(self, zone: int, pkt: dict[str, int]) -> None:
        """Set ct_state, ct_zone and ct_mark on the packet, as ct(zone=…) does."""
        mine, _ = self.tuple_of(pkt)
        entry = self.entries.get((zone, mine))
        pkt["ct_zone"] = zone
        if entry is None:
            flags = pkt.get("tcp_flags")
            invalid = pkt.get("nw_proto") == 6 and flags is not None and not flags & 0x02
            pkt["ct_state"] = CT_BITS["trk"] | (CT_BITS["inv"] if invalid else CT_BITS["new"])
            pkt["ct_mark"] = 0
            return
        reply = mine != entry.orig
        if reply:
            entry.replied = True
        state = CT_BITS["est"] if entry.replied else CT_BITS["new"]
        pkt["ct_state"] = CT_BITS["trk"] | state | (CT_BITS["rpl"] if reply else 0)
        pkt["ct_mark"] = entry.mark

    def commit(self, zone: int, pkt: Mapping[str, int], mark: int) -> None:
        """Remember the packet's connection (ct(commit)), with its mark."""
        mine, back = self.tuple_of(pkt)
        entry = self.entries.get((zone, mine))
        if entry is None:
            entry = Entry(mine, mark)
            self.entries[(zone, mine)] = self.entries[(zone, back)] = entry
        else:
            entry.mark = mark

    def flush(self) -> None:
        """Forget every connection."""
        self.entries.clear()
