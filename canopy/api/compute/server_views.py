"""How a server looks in the Compute API, by microversion and by who is asking."""

from __future__ import annotations

import hashlib
from typing import Any

from canopy import states
from canopy.clock import isotime, isotime_us

Version = tuple[int, int]


def host_id(project_id: str, host: str | None) -> str:
    """Nova's opaque hostId: the same for one project's servers on one host, meaningless elsewhere."""
    return hashlib.sha224((project_id + host).encode()).hexdigest() if host else ""


def render_addresses(addresses: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {
        net: [{"version": a["version"], "addr": a["addr"], "OS-EXT-IPS:type": "fixed",
               "OS-EXT-IPS-MAC:mac_addr": a.get("mac")} for a in addrs]
        for net, addrs in addresses.items()
    }


def render_fault(fault: dict[str, Any], is_admin: bool) -> dict[str, Any]:
    """Nova shows the details to admins, and to everyone only for faults that aren't 500s."""
    body = {"code": fault["code"], "created": isotime(fault["created_at"]), "message": fault["message"]}
    if is_admin or fault["code"] != 500:
        body["details"] = fault["details"]
    return body


def should_show_fault(inst: dict[str, Any], fault: dict[str, Any] | None) -> bool:
    """ERROR and DELETED servers show their fault; so does one whose last action failed (same write)."""
    if fault is None:
        return False
    return inst["vm_state"] in (states.ERROR, states.DELETED) or fault["created_at"] >= inst["updated_at"]


def render_flavor(inst: dict[str, Any], mv: Version, links: list[dict[str, str]]) -> dict[str, Any]:
    f = inst["flavor"]
    if mv >= (2, 47):
        return {"vcpus": f["vcpus"], "ram": f["ram"], "disk": f["disk"], "ephemeral": f.get("ephemeral", 0),
                "swap": f.get("swap", 0), "original_name": f["name"], "extra_specs": f.get("extra_specs", {})}
    return {"id": inst["flavor_id"], "links": links}


def render_server(inst: dict[str, Any], *, mv: Version, is_admin: bool, base: str,
                  fault: dict[str, Any] | None = None) -> dict[str, Any]:
    """The detailed view of one server."""
    uuid = inst["uuid"]
    links = [{"rel": "self", "href": f"{base}/v2.1/servers/{uuid}"},
             {"rel": "bookmark", "href": f"{base}/servers/{uuid}"}]
    image: Any = ""
    if inst["image_ref"]:
        image = {"id": inst["image_ref"], "links": [{"rel": "bookmark", "href": f"{base}/images/{inst['image_ref']}"}]}
    flavor_links = [{"rel": "bookmark", "href": f"{base}/flavors/{inst['flavor_id']}"}]
    body: dict[str, Any] = {
        "id": uuid,
        "name": inst["name"],
        "status": states.status_of(inst["vm_state"], inst["task_state"]),
        "tenant_id": inst["project_id"],
        "user_id": inst["user_id"],
        "metadata": inst["metadata"] or {},
        "hostId": host_id(inst["project_id"], inst["host"]),
        "image": image,
        "flavor": render_flavor(inst, mv, flavor_links),
        "created": isotime(inst["created_at"]),
        "updated": isotime(inst["updated_at"]),
        "addresses": render_addresses(inst["addresses"] or {}),
        "accessIPv4": inst.get("access_ip_v4") or "",
        "accessIPv6": inst.get("access_ip_v6") or "",
        "links": links,
        "OS-DCF:diskConfig": "MANUAL",
        "progress": inst["progress"] if inst["vm_state"] in (states.BUILDING, states.ACTIVE) else 0,
        "OS-EXT-AZ:availability_zone": inst["availability_zone"] or "",
        "config_drive": inst["config_drive"] or "",
        "key_name": inst["key_name"],
        "OS-SRV-USG:launched_at": isotime_us(inst["launched_at"]),
        "OS-SRV-USG:terminated_at": isotime_us(inst["terminated_at"]),
        "OS-EXT-STS:task_state": inst["task_state"],
        "OS-EXT-STS:vm_state": inst["vm_state"],
        "OS-EXT-STS:power_state": inst["power_state"],
        "os-extended-volumes:volumes_attached": [],
        "security_groups": [{"name": n} for n in inst.get("security_group_names", ())],
    }
    if is_admin:
        body["OS-EXT-SRV-ATTR:host"] = inst["host"]
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = inst["host"]
        body["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{inst['id']:08x}"
        if mv >= (2, 3):
            body.update({
                "OS-EXT-SRV-ATTR:reservation_id": inst["reservation_id"],
                "OS-EXT-SRV-ATTR:launch_index": inst["launch_index"],
                "OS-EXT-SRV-ATTR:hostname": inst["hostname"],
                "OS-EXT-SRV-ATTR:kernel_id": "",
                "OS-EXT-SRV-ATTR:ramdisk_id": "",
                "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                "OS-EXT-SRV-ATTR:user_data": inst["user_data"],
            })
    if mv >= (2, 9):
        body["locked"] = bool(inst["locked"])
    if mv >= (2, 16) and is_admin:
        body["host_status"] = "UP" if inst["host"] else ""
    if mv >= (2, 19):
        body["description"] = inst["description"]
    if mv >= (2, 26):
        body["tags"] = list(inst.get("tags") or [])
    if mv >= (2, 63):
        body["trusted_image_certificates"] = None
    if mv >= (2, 73):
        body["locked_reason"] = inst.get("locked_reason") if inst["locked"] else None
    if fault is not None and should_show_fault(inst, fault):
        body["fault"] = render_fault(fault, is_admin)
    return body


def render_brief(inst: dict[str, Any], base: str) -> dict[str, Any]:
    uuid = inst["uuid"]
    return {"id": uuid, "name": inst["name"],
            "links": [{"rel": "self", "href": f"{base}/v2.1/servers/{uuid}"},
                      {"rel": "bookmark", "href": f"{base}/servers/{uuid}"}]}
