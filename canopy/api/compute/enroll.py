"""Compute API extension: a new host's agent enrolls (issue 19).

    POST /v2.1/canopy-enroll     {"enrollment": {"token", "hostname", "cell"?, "labels"?, "hardware": {...}}}

Authenticated by the enrollment token alone (no Keystone token: the agent has no credentials yet). The
report is checked for shape and size first; then everything that can refuse it is checked without
writing (canopy.db.enrollment.check_enrollment); then the host's row is written in its cell as `pending`
(the scheduler skips it until a heartbeat reports every health check passing), and last the token is
consumed, the inventory record marked enrolled and the host mapped to its cell in one global
transaction. If the token is lost to a race there, the cell row this request made is removed again.

The answer (201) carries the host's name as the inventory knows it, its placement, a per-host bus secret
(only its hash is kept) and the cell's bus addresses.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.common import cloud_of
from canopy.api.errors import ApiError
from canopy.api.http import json_response, read_object, route
from canopy.db import enrollment as enr
from canopy.db import inventory as inv
from canopy.runtime import Cloud

PATH = "/v2.1/canopy-enroll"
MAX_BODY = 64 * 1024
MAX_DISKS, MAX_NICS, MAX_LABELS = 64, 16, 16
_TOP = {"token", "hostname", "cell", "labels", "hardware"}
_HW = {"serial", "cpus", "memory_mb", "disks", "nics", "hypervisor", "switch_version", "host_ip", "cpu_model"}


def _bad(field: str, value: Any, why: str) -> ApiError:
    return ApiError(400, f"Invalid input for field/attribute {field}. Value: {value!r}. {why}")


def _int(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(field, value, f"It must be an integer from {low} to {high}.")
    return value


def _str(field: str, value: Any, most: int, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= most or not value.isprintable():
        raise _bad(field, value, f"It must be 1-{most} printable characters.")
    return value


def _list(field: str, value: Any, most: int) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > most or not all(isinstance(v, dict) for v in value):
        raise _bad(field, value, f"It must be a list of at most {most} objects.")
    return value


def _extra(where: str, body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ApiError(400, f"Invalid input for field/attribute {where}. Additional properties are not allowed "
                            f"('{extra[0]}' was unexpected)")


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_LABELS:
        raise _bad("labels", value, f"It must be an object of at most {MAX_LABELS} names.")
    return {str(_str("labels", k, 64)): str(_str(f"labels.{k}", v, 64)) for k, v in value.items()}


def parse_report(body: dict[str, Any]) -> tuple[str, enr.Report]:
    """The token and the agent's report, every field checked (400 naming the first bad one)."""
    _extra("enrollment", body, _TOP)
    token = _str("token", body.get("token"), 128)
    hw = body.get("hardware")
    if not isinstance(hw, dict):
        raise _bad("hardware", hw, "It must be an object.")
    _extra("hardware", hw, _HW)
    disks = _list("hardware.disks", hw.get("disks", []), MAX_DISKS)
    nics = _list("hardware.nics", hw.get("nics", []), MAX_NICS)
    sizes = [_int("hardware.disks.size_gb", d.get("size_gb"), 1, 1 << 20) for d in disks]
    try:
        hostname = inv.check_host_name("hostname", body.get("hostname"))
        serial = inv.check_serial("hardware.serial", hw.get("serial"))
        macs = inv.check_macs("hardware.nics.mac", [n.get("mac") for n in nics])
    except inv.InventoryError as e:
        raise ApiError(400, e.message) from None
    hv = hw.get("hypervisor")
    if not isinstance(hv, dict):
        raise _bad("hardware.hypervisor", hv, "It must be an object with type and version.")
    _str("hardware.switch_version", hw.get("switch_version"), 64, optional=True)
    report = enr.Report(
        hostname=hostname, serial=serial, macs=macs, vcpus=_int("hardware.cpus", hw.get("cpus"), 1, 65536),
        memory_mb=_int("hardware.memory_mb", hw.get("memory_mb"), 1, 1 << 34), local_gb=sum(sizes),
        hypervisor_type=str(_str("hardware.hypervisor.type", hv.get("type"), 32)),
        hypervisor_version=_int("hardware.hypervisor.version", hv.get("version"), 0, 1 << 31),
        host_ip=_str("hardware.host_ip", hw.get("host_ip"), 64, optional=True),
        cell=_str("cell", body.get("cell"), 64, optional=True), labels=_labels(body.get("labels")), hardware=hw)
    return str(token), report


def bus_of(cloud: Cloud, match: enr.Match) -> dict[str, Any]:
    """The bus addresses an agent of the match's cell connects to: the registered cell's bus URL, else
    this api's bus."""
    if match.transport_url:
        return {"transport_url": match.transport_url}
    b = cloud.settings.bus
    return {"transport": b.transport, "zmq_connect": list(b.zmq_connect), "nats_urls": list(b.nats_urls),
            "amqp_url": b.amqp_url if b.transport == "amqp" else ""}


async def enroll(request: Request) -> Response:
    """POST /v2.1/canopy-enroll: an agent with an enrollment token becomes a (pending) host of a cell."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise ApiError(413, f"The enrollment report is larger than {MAX_BODY} bytes.")
    token, report = parse_report(await read_object(request, "enrollment"))
    cloud = cloud_of(request)
    now = cloud.clock.now()
    try:
        match = await cloud.dbs.global_db.read_fresh(enr.check_enrollment, token, report, now)
        if match.cell not in cloud.dbs.cells:
            raise enr.EnrollmentError(409, f"Cell {match.cell} is not known to this api.")
        cell_db = cloud.dbs.cell(match.cell)
        created = await cell_db.write(enr.write_cell_host, match, report, now)
        secret = enr.new_secret()
        try:
            await cloud.dbs.global_db.write(enr.commit_enrollment, match, report, enr.hash_token(secret), now)
        except Exception:
            if created:
                await cell_db.write(enr.remove_cell_host, match.host)
            raise
    except enr.EnrollmentError as e:
        raise ApiError(e.status, e.message) from None
    return json_response({"enrollment": {
        "host": match.host, "cell": match.cell, "datacenter": match.datacenter, "rack": match.rack,
        "state": "pending", "bus_secret": secret, "bus": bus_of(cloud, match)}}, status=201)


ROUTES = [route(PATH, enroll, ["POST"], "compute:canopy-enroll:create")]
