"""The OpenFlow layout of a host's integration bridge, declared once: tables, registers, reserved port
numbers, cookies and meter ids. Every other module names these constants, never a bare number.

A packet walks the tables in order; each table either drops it, answers it, or sends it on:

    CLASSIFY ─ from a VM port ──▶ PORT_SECURITY ─▶ EGRESS_ACL ─▶ ARP_ND ─▶ FORWARD ─▶ INGRESS_ACL ─▶ DELIVER
             ─ from the uplink / a tunnel ─────────────────────────▶ ARP_ND ─▶ FORWARD ─▶ …

- CLASSIFY: tags the packet with its network (REG_NET) and origin (REG_ORIGIN); meters a port's egress.
- PORT_SECURITY: anti-spoofing of what a VM sends (MAC, IPv4/IPv6 source, ARP, NA, DHCP/RA servers).
- EGRESS_ACL, INGRESS_ACL: security groups (see `secgroups`): a port's IP traffic goes through conntrack
  in the port's zone (…_CT), the port's groups each vote on it (…_RULES, resubmitted once per group, the
  allowing rule's mark left in REG_MARK), and …_COMMIT drops what no rule allowed and commits a new
  connection with the rule's mark as its ct_mark. Established traffic passes only while a rule of the
  port's groups carries its mark: removing a rule cuts the connections it allowed.
- ARP_ND: the ARP responder for the segment's addresses (networks with `canopy:arp_responder`); ARP
  requests and IPv6 neighbour solicitations delivered only to the port that owns the address asked about.
- FORWARD: layer 2 by (network, destination MAC): to a local port, through a tunnel, or out of the uplink.
- DELIVER: output to the port chosen in REG_OUT, through its ingress meter.
- FLOOD: the chunks of an output list too long for one flow (a broadcast DHCP reply to 5,000 ports).
"""

from __future__ import annotations

import zlib

CLASSIFY = 0
PORT_SECURITY = 10
EGRESS_ACL = 20  # security groups, egress: into conntrack
EGRESS_CT = 21  # after conntrack: invalid dropped, the port's groups asked
EGRESS_RULES = 22  # the rules of each group on the host (resubmitted per group)
EGRESS_COMMIT = 23  # the verdict: drop, or commit a new connection with its rule's mark
ARP_ND = 30
FORWARD = 40
INGRESS_ACL = 50  # security groups, ingress (the same four steps)
INGRESS_CT = 51
INGRESS_RULES = 52
INGRESS_COMMIT = 53
DELIVER = 60
FLOOD = 70  # long output lists, cut into chunks: one OpenFlow message holds at most 64 KiB

TABLE_NAMES = {
    CLASSIFY: "classify", PORT_SECURITY: "port_security", EGRESS_ACL: "egress_acl", ARP_ND: "arp_nd",
    FORWARD: "forward", INGRESS_ACL: "ingress_acl", DELIVER: "deliver", FLOOD: "flood",
    EGRESS_CT: "egress_ct", EGRESS_RULES: "egress_rules", EGRESS_COMMIT: "egress_commit",
    INGRESS_CT: "ingress_ct", INGRESS_RULES: "ingress_rules", INGRESS_COMMIT: "ingress_commit",
}

# Registers carried between tables.
REG_ZONE = "reg1"  # the conntrack zone of the port being filtered (its OpenFlow port number)
REG_MARK = "reg2"  # the mark of the rule that allowed the packet (0: none yet)
REG_GROUP = "reg3"  # the tag of the security group whose rules are being asked
REG_FLOOD = "reg4"  # which chunk of a flood list the FLOOD table outputs
REG_ORIGIN = "reg5"  # where the packet entered: one of the ORIGIN_* values
REG_NET = "reg6"  # the network (segment) key, see network_key()
REG_OUT = "reg7"  # the OpenFlow port a unicast packet is delivered to

ORIGIN_VM = 1
ORIGIN_UPLINK = 2
ORIGIN_TUNNEL = 3

# OpenFlow port numbers: 1 is the flow-based VXLAN port, 2..99 the uplinks to physical networks, and
# VM ports are numbered from 100 by the database when a port is bound to the host.
TUNNEL_OFPORT = 1
FIRST_UPLINK_OFPORT = 2
LAST_UPLINK_OFPORT = 99
FIRST_VM_OFPORT = 100
MAX_VM_OFPORT = 65279  # OFPP_MAX (0xff00) - 1: above are OpenFlow's reserved ports

# Flat networks are keyed above the 24-bit VNI space, so a flat key never equals a VXLAN one.
FLAT_KEY_BASE = 1 << 24

# Cookies mark Canopy's flows: the top 16 bits say "Canopy", the low bits the VM port they belong to
# (0 for flows of the host or of a network).
COOKIE_CANOPY = 0xCA90 << 48
COOKIE_MASK = 0xFFFF << 48
NEIGHBOR_COOKIE = COOKIE_CANOPY | (1 << 32)

FLOOD_CHUNK = 200  # outputs per flow: well under OpenFlow's 64 KiB message limit
FLOOD_EVERYONE, FLOOD_OPEN, FLOOD_TUNNELS = 1, 2, 3

BROADCAST = "ff:ff:ff:ff:ff:ff"
MULTICAST = "01:00:00:00:00:00/01:00:00:00:00:00"


def network_key(network_type: str, uplink_ofport: int | None, vni: int | None) -> int:
    """The REG_NET value of a network on this host: its VNI for vxlan, the flat base plus the uplink's
    port for flat (one flat network per physical network, so the uplink names it)."""
    if network_type == "vxlan":
        if vni is None or not 0 < vni < FLAT_KEY_BASE:
            raise ValueError(f"a vxlan network needs a 24-bit VNI, not {vni!r}")
        return vni
    if uplink_ofport is None:
        raise ValueError("a flat network needs an uplink port")
    return FLAT_KEY_BASE + uplink_ofport


def port_cookie(ofport: int) -> int:
    """The cookie of the flows that belong to one VM port."""
    return COOKIE_CANOPY | ofport


def egress_meter(ofport: int) -> int:
    """The meter limiting what a VM port sends."""
    return 2 * ofport


def ingress_meter(ofport: int) -> int:
    """The meter limiting what a VM port receives."""
    return 2 * ofport + 1


def tap_name(port_id: str) -> str:
    """The host interface of a VM port, as Nova names it (15 characters, the kernel's limit)."""
    return ("tap" + port_id)[:14]


def uplink_ofport(physical_network: str, configured: dict[str, int] | None = None) -> int:
    """The OpenFlow port of a physical network's uplink: as configured, else derived from its name so
    that every host, and `canopy network flows`, number it alike without asking anyone."""
    if configured and physical_network in configured:
        return configured[physical_network]
    span = LAST_UPLINK_OFPORT - FIRST_UPLINK_OFPORT + 1
    return FIRST_UPLINK_OFPORT + zlib.crc32(physical_network.encode()) % span
