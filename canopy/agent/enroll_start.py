"""`canopy agent --enroll TOKEN --api URL`: enroll once, keep what came back, and start from it.

The first start enrolls and saves `<data_dir>/agent-enrollment.json` (mode 0600); later starts read it
and need no token (a token is single-use). The saved bus addresses and placement replace the config's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from canopy.agent.enroll import Enrolled, enroll, load_credentials, machine_facts, save_credentials, simulated_facts
from canopy.agent.virt.fake import FakeDriver
from canopy.config import Settings

CREDENTIALS = "agent-enrollment.json"


def _meminfo_mb(path: Path = Path("/proc/meminfo")) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1


def _report(settings: Settings, name: str, driver_kind: str) -> dict[str, Any]:
    from canopy.agent.enroll import hardware_report

    a = settings.agent
    if driver_kind == "fake":
        fake = FakeDriver(name, vcpus=a.vcpus, memory_mb=a.memory_mb, local_gb=a.disk_gb)
        return hardware_report(fake, simulated_facts(name, disk_gb=a.disk_gb))
    facts = machine_facts()
    # The real hypervisor version is reported at registration, once libvirt is connected.
    return {"serial": facts.serial, "cpus": os.cpu_count() or 1, "memory_mb": _meminfo_mb(),
            "disks": [{"name": n, "size_gb": gb} for n, gb in facts.disks.items()],
            "nics": [{"name": n, "mac": m} for n, m in facts.nics.items()],
            "hypervisor": {"type": "QEMU", "version": 0}, "switch_version": facts.switch_version}


def apply_enrollment(settings: Settings, enrolled: Enrolled) -> None:
    """Point the agent's settings at what enrollment gave: its cell's bus and its placement."""
    bus, b = enrolled.bus, settings.bus
    url = str(bus.get("transport_url") or "")
    if url.startswith("nats://"):
        b.transport, b.nats_urls = "nats", [url]
    elif url.startswith(("amqp://", "amqps://")):
        b.transport, b.amqp_url = "amqp", url
    elif url.startswith("tcp://"):
        b.transport, b.zmq_connect = "zmq", [url]
    elif bus.get("transport"):
        b.transport = bus["transport"]
        b.zmq_connect = list(bus.get("zmq_connect") or b.zmq_connect)
        b.nats_urls = list(bus.get("nats_urls") or b.nats_urls)
        b.amqp_url = bus.get("amqp_url") or b.amqp_url
    settings.agent.datacenter, settings.agent.rack = enrolled.datacenter, enrolled.rack


async def enroll_and_configure(settings: Settings, name: str, token: str | None, api_url: str | None,
                               driver_kind: str) -> str:
    """Enroll (or read the saved enrollment), apply it to `settings`; the host's name to run as."""
    path = settings.data_dir / CREDENTIALS
    enrolled = load_credentials(path)
    if enrolled is None:
        if not token or not api_url:
            raise SystemExit("canopy agent: --enroll needs a token and --api the api's URL")
        async with httpx.AsyncClient(base_url=api_url.rstrip("/")) as http:
            enrolled = await enroll(http, token, name, _report(settings, name, driver_kind),
                                    labels={k: v for k, v in (("datacenter", settings.agent.datacenter),
                                                              ("rack", settings.agent.rack)) if v} or None)
        save_credentials(path, enrolled)
    apply_enrollment(settings, enrolled)
    return enrolled.host
