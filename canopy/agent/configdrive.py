"""The config drive: an ISO 9660 volume labelled `config-2` in the OpenStack metadata layout, built in
Python (pycdlib). A hosting network has no DHCP by default, so the guest learns its static addresses,
gateway and DNS servers from network_data.json.

    openstack/latest/meta_data.json     uuid, hostname, name, public keys, metadata
    openstack/latest/network_data.json  links (NICs by MAC), networks (static IPs, routes), services (DNS)
    openstack/latest/user_data          when the server has user data
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
from pathlib import Path
from typing import Any

import pycdlib

from canopy.agent.virt.vif import tap_name
from canopy.rpc.calls import InstanceSpec

LABEL = "config-2"
VERSIONS = ("latest", "2018-08-27")


def meta_data(spec: InstanceSpec, availability_zone: str = "nova") -> dict[str, Any]:
    """meta_data.json."""
    keys: dict[str, str] = {}
    if spec.key_data:
        # the spec carries the key, not its name
        keys["key"] = spec.key_data.strip()
    doc: dict[str, Any] = {
        "uuid": spec.uuid, "name": spec.name, "hostname": spec.hostname, "project_id": spec.project_id,
        "availability_zone": availability_zone, "launch_index": 0, "meta": dict(spec.metadata),
        "public_keys": keys,
        "keys": [{"name": name, "type": "ssh", "data": data} for name, data in keys.items()],
        "devices": [],
    }
    if spec.admin_pass:
        doc["admin_pass"] = spec.admin_pass  # as Nova's config drive: cloud-init sets it for the default user
    return doc


def _subnet_of(ip: str, subnets: list[dict[str, Any]]) -> dict[str, Any] | None:
    addr = ipaddress.ip_address(ip)
    for subnet in subnets:
        if addr in ipaddress.ip_network(subnet["cidr"], strict=False):
            return subnet
    return None


def network_data(spec: InstanceSpec) -> dict[str, Any]:
    """network_data.json: one link per port, one static network per fixed IP, DNS as services."""
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    dns: list[str] = []
    for port in spec.ports:
        link = tap_name(port.id)
        links.append({"id": link, "vif_id": port.id, "type": "ovs", "ethernet_mac_address": port.mac_address,
                      "mtu": port.mtu})
        for fixed in port.fixed_ips:
            subnet = _subnet_of(fixed["ip_address"], port.subnets) or {}
            cidr = ipaddress.ip_network(subnet.get("cidr") or _host_cidr(fixed["ip_address"]), strict=False)
            v6 = cidr.version == 6
            entry: dict[str, Any] = {
                "id": f"network{len(networks)}", "link": link, "network_id": port.network_id,
                "type": "ipv6" if v6 else "ipv4", "ip_address": fixed["ip_address"],
                "netmask": str(cidr.netmask), "routes": [], "services": [],
            }
            gateway = subnet.get("gateway_ip")
            if gateway:
                entry["routes"].append({"network": "::" if v6 else "0.0.0.0", "netmask": "::" if v6 else "0.0.0.0",
                                        "gateway": gateway})
            for route in subnet.get("host_routes") or []:
                dest = ipaddress.ip_network(route["destination"], strict=False)
                entry["routes"].append({"network": str(dest.network_address), "netmask": str(dest.netmask),
                                        "gateway": route["nexthop"]})
            for server in subnet.get("dns_nameservers") or []:
                entry["services"].append({"type": "dns", "address": server})
                if server not in dns:
                    dns.append(server)
            networks.append(entry)
    return {"links": links, "networks": networks, "services": [{"type": "dns", "address": a} for a in dns]}


def _host_cidr(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def user_data(spec: InstanceSpec) -> bytes | None:
    """The server's user data: the API takes it base64-encoded; the guest reads the decoded bytes."""
    if not spec.user_data:
        return None
    try:
        return base64.b64decode(spec.user_data, validate=True)
    except (binascii.Error, ValueError):
        return spec.user_data.encode()


def files(spec: InstanceSpec, availability_zone: str = "nova") -> dict[str, bytes]:
    """Every file of the drive, by path."""
    docs = {"meta_data.json": json.dumps(meta_data(spec, availability_zone), indent=1).encode(),
            "network_data.json": json.dumps(network_data(spec), indent=1).encode(),
            "vendor_data.json": b"{}", "vendor_data2.json": b"{}"}
    ud = user_data(spec)
    if ud is not None:
        docs["user_data"] = ud
    return {f"openstack/{version}/{name}": data for version in VERSIONS for name, data in docs.items()}


def build_iso(contents: dict[str, bytes]) -> bytes:
    """An ISO 9660 image (Rock Ridge and Joliet names, so guests see the real file names) labelled config-2."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    made: set[str] = set()
    for n, (path, data) in enumerate(sorted(contents.items())):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                iso.add_directory(_iso_path(parts[:depth]), rr_name=parts[depth - 1], joliet_path="/" + directory)
                made.add(directory)
        iso_name = _iso_path(parts[:-1]) + f"/F{n:06d}.;1"
        if len(parts) == 1:
            iso_name = f"/F{n:06d}.;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=parts[-1], joliet_path="/" + path)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def _iso_path(parts: list[str]) -> str:
    """A legal ISO 9660 directory path for a list of names (Rock Ridge carries the real names)."""
    return "".join("/" + "".join(ch for ch in p.upper() if ch.isalnum() or ch == "_")[:8].ljust(1, "D")
                   for p in parts)


def read_iso(path: Path) -> dict[str, bytes]:
    """The files of a config drive by their Rock Ridge path (tests read back what they built)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    out: dict[str, bytes] = {}
    try:
        for dirname, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                full = f"{dirname.rstrip('/')}/{name}"
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=full)
                out[full.lstrip("/")] = buf.getvalue()
    finally:
        iso.close()
    return out


def write(spec: InstanceSpec, dest: Path, availability_zone: str = "nova") -> None:
    """Build the drive for a server and write it to `dest`."""
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(build_iso(files(spec, availability_zone)))
    tmp.replace(dest)
