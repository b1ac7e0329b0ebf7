"""What a libvirt connection says about its host: capacity, hypervisor version, CPU, machine types."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canopy.agent.virt.base import GuestStatus, PowerState


@dataclass(frozen=True, slots=True)
class HostFacts:
    """Read once when the agent connects."""

    hypervisor_type: str
    hypervisor_version: int
    vcpus: int
    memory_mb: int
    local_gb: int
    offers_kvm: bool
    cpu_info: dict[str, Any] = field(default_factory=dict)
    machines: frozenset[str] = frozenset()
    cpu_models: frozenset[str] = frozenset()


def read_facts(conn: Any, disk_path: Path) -> HostFacts:
    """Capacity from libvirt (CPUs, memory) and from the disk the instances live on."""
    info = conn.getInfo()  # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
    caps = ET.fromstring(conn.getCapabilities())
    try:
        hv_type = conn.getType()
        version = conn.getVersion()
    except Exception:  # not every driver tells its version
        hv_type, version = "QEMU", 0
    disk = shutil.disk_usage(disk_path)
    return HostFacts(
        hypervisor_type=hv_type, hypervisor_version=int(version), vcpus=int(info[2]), memory_mb=int(info[1]),
        local_gb=int(disk.total // (1 << 30)), offers_kvm=_offers(caps, "kvm"), cpu_info=_cpu_info(caps),
        machines=_machines(caps), cpu_models=frozenset(_cpu_models(conn)),
    )


def _offers(caps: ET.Element, domain_type: str) -> bool:
    for guest in caps.findall("./guest"):
        arch = guest.find("arch")
        if arch is not None and arch.get("name") == "x86_64":
            if any(d.get("type") == domain_type for d in arch.findall("domain")):
                return True
    return False


def _machines(caps: ET.Element) -> frozenset[str]:
    names: set[str] = set()
    for arch in caps.findall("./guest/arch[@name='x86_64']"):
        for m in arch.findall(".//machine"):
            if m.text:
                names.add(m.text)
            if m.get("canonical"):
                names.add(m.get("canonical", ""))
    return frozenset(names)


def _cpu_models(conn: Any) -> list[str]:
    try:
        return list(conn.getCPUModelNames("x86_64", 0))
    except Exception:  # not every driver lists models
        return []


def _cpu_info(caps: ET.Element) -> dict[str, Any]:
    """The host CPU in the shape os-hypervisors shows it."""
    cpu = caps.find("./host/cpu")
    if cpu is None:
        return {}
    topo = cpu.find("topology")
    return {
        "arch": cpu.findtext("arch") or "x86_64", "model": cpu.findtext("model") or "",
        "vendor": cpu.findtext("vendor") or "",
        "topology": {k: int(topo.get(k, "1")) for k in ("sockets", "cores", "threads")} if topo is not None else {},
        "features": sorted(f.get("name", "") for f in cpu.findall("feature")),
    }


# libvirt's virDomainState and its shutoff reasons, without importing libvirt here (pure table)
_STATE = {0: PowerState.NOSTATE, 1: PowerState.RUNNING, 2: PowerState.RUNNING, 3: PowerState.PAUSED,
          4: PowerState.RUNNING, 5: PowerState.SHUTDOWN, 6: PowerState.CRASHED, 7: PowerState.SUSPENDED}
_SHUTOFF_REASONS = {0: "", 1: "shutdown", 2: "destroyed", 3: "crashed", 4: "migrated", 5: "saved", 6: "failed",
                    7: "from-snapshot", 8: "daemon"}
_PAUSED_REASONS = {5: "saving", 6: "crashed"}


def guest_status(state: int, reason: int, managed_save: bool) -> GuestStatus:
    """The power state and reason for libvirt's (state, reason) of a domain."""
    power = _STATE.get(state, PowerState.NOSTATE)
    if state == 5:  # shut off
        if managed_save:
            return GuestStatus(PowerState.SUSPENDED, "saved")
        return GuestStatus(power, _SHUTOFF_REASONS.get(reason, "unknown"))
    if state == 6:
        return GuestStatus(PowerState.CRASHED, "crashed")
    if state == 3:
        return GuestStatus(power, _PAUSED_REASONS.get(reason, ""))
    return GuestStatus(power)


def tail_lines(data: bytes, length: int | None) -> str:
    """The last `length` lines of console bytes (all when None), as text."""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    if length is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-length:]) if length > 0 else ""
