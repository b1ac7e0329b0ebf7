"""An agent's enrollment (issue 19): with a single-use token and the api's address it reports its hardware
to `POST /compute/v2.1/canopy-enroll` and gets back its name, its cell, a per-host bus secret and the
cell's bus addresses, which it keeps in a file of its own (mode 0600) and starts with.

The hardware report: CPUs, memory, disks, NICs with MACs, hypervisor and switch versions. A real host's
serial, NICs and disks come from /sys (`machine_facts`); the fake driver's are simulated from its name
(`simulated_facts`), so thousands of simulated hosts enroll with distinct serials and MACs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from canopy.agent.virt.base import VirtDriver

ENROLL_PATH = "/compute/v2.1/canopy-enroll"
TIMEOUT_S = 30.0


class EnrollmentRefused(Exception):
    """The api refused the enrollment: its status and message (nothing was created)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"enrollment refused ({status}): {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class MachineFacts:
    """What identifies the machine: its serial, NICs (name -> MAC) and disks (name -> GB), switch version."""

    serial: str | None
    nics: dict[str, str]
    disks: dict[str, int]
    switch_version: str | None = None


@dataclass(frozen=True)
class Enrolled:
    """What the api gave back: the host's name and placement, its bus secret, its cell's bus."""

    host: str
    cell: str
    datacenter: str
    rack: str
    bus_secret: str
    bus: dict[str, Any] = field(default_factory=dict)


def simulated_facts(name: str, nics: int = 2, disk_gb: int = 2000) -> MachineFacts:
    """A simulated machine's facts, stable for its name (serial SIM-<hash>, MACs 02:…, locally administered)."""
    digest = hashlib.sha256(name.encode()).digest()
    macs = {f"eth{n}": "02:" + ":".join(f"{b:02x}" for b in digest[n * 5:n * 5 + 5]) for n in range(nics)}
    return MachineFacts(serial=f"SIM-{digest[:6].hex()}", nics=macs, disks={"sda": disk_gb},
                        switch_version="simulated")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def machine_facts(sys_root: Path = Path("/sys"), switch_version: str | None = None) -> MachineFacts:
    """A real machine's facts from /sys: DMI serial, physical NICs (with a `device` link), whole disks."""
    nics = {}
    for dev in sorted((sys_root / "class/net").glob("*")):
        mac = _read(dev / "address").lower()
        if (dev / "device").exists() and mac and mac != "00:00:00:00:00:00":
            nics[dev.name] = mac
    disks = {}
    for dev in sorted((sys_root / "block").glob("*")):
        sectors = _read(dev / "size")
        if (dev / "device").exists() and sectors.isdigit():
            disks[dev.name] = max(1, int(sectors) * 512 // (1 << 30))
    serial = _read(sys_root / "class/dmi/id/product_serial") or None
    return MachineFacts(serial=serial, nics=dict(list(nics.items())[:16]), disks=dict(list(disks.items())[:64]),
                        switch_version=switch_version)


def hardware_report(driver: VirtDriver, facts: MachineFacts) -> dict[str, Any]:
    """The `hardware` object of an enrollment: the hypervisor's view plus the machine's facts."""
    info = driver.host_info()
    report: dict[str, Any] = {
        "serial": facts.serial, "cpus": info.vcpus, "memory_mb": info.memory_mb,
        "disks": [{"name": n, "size_gb": gb} for n, gb in facts.disks.items()],
        "nics": [{"name": n, "mac": mac} for n, mac in facts.nics.items()],
        "hypervisor": {"type": info.hypervisor_type, "version": info.hypervisor_version},
        "switch_version": facts.switch_version, "host_ip": info.host_ip}
    if info.cpu_info.get("model"):
        report["cpu_model"] = str(info.cpu_info["model"])[:64]
    return report


async def enroll(http: httpx.AsyncClient, token: str, hostname: str, hardware: dict[str, Any], *,
                 cell: str | None = None, labels: dict[str, str] | None = None) -> Enrolled:
    """Enroll through the api (`http` has the api's base URL); EnrollmentRefused names why it was refused."""
    body = {"enrollment": {"token": token, "hostname": hostname, "hardware": hardware,
                           **({"cell": cell} if cell else {}), **({"labels": labels} if labels else {})}}
    resp = await http.post(ENROLL_PATH, json=body, timeout=TIMEOUT_S)
    if resp.status_code != 201:
        raise EnrollmentRefused(resp.status_code, _message(resp))
    out = resp.json()["enrollment"]
    return Enrolled(host=out["host"], cell=out["cell"], datacenter=out["datacenter"], rack=out["rack"],
                    bus_secret=out["bus_secret"], bus=out.get("bus") or {})


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return str(next(iter(body.values()))["message"])
    except Exception:  # noqa: BLE001 - any non-compute answer (a proxy's page) is shown as text
        return resp.text[:200]


def save_credentials(path: Path, enrolled: Enrolled) -> None:
    """Keep what enrollment gave, readable by this user only (the secret never goes to a log)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(enrolled), f)


def load_credentials(path: Path) -> Enrolled | None:
    """What an earlier enrollment saved (None: this host has not enrolled)."""
    if not path.exists():
        return None
    return Enrolled(**json.loads(path.read_text()))
