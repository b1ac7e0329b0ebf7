"""The LVM volume group's room as a health check (agent/health.py `disk:volume_group`), through the
command-runner seam: the exact `vgs`/`lvs` calls, a missing group, a full one, a thin pool."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from canopy.agent.disk.commands import RecordingRunner
from canopy.agent.disk.lvm import LvmBackend
from canopy.agent.health import HostHealth, agent_probes, volume_group_probe
from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.agent.virt.base import DriverError
from canopy.agent.virt.fake import FakeDriver

GiB = 1 << 30


async def test_free_space_of_a_volume_group() -> None:
    runner = RecordingRunner(stdout={"vgs": f"  {50 * GiB}\n"})
    assert await LvmBackend("vg0", runner=runner).free_bytes() == 50 * GiB
    assert runner.calls == [("vgs", "--noheadings", "--nosuffix", "--units", "b", "-o", "vg_free", "vg0")]


async def test_free_space_of_a_thin_pool() -> None:
    runner = RecordingRunner(stdout={"lvs": f"  {100 * GiB} 75.00\n"})
    assert await LvmBackend("vg0", "pool0", runner=runner).free_bytes() == 25 * GiB
    assert runner.calls[0][-1] == "vg0/pool0" and "data_percent" in runner.calls[0][-2]


async def test_a_missing_volume_group_is_named() -> None:
    runner = RecordingRunner(fail={"vgs": (5, '  Volume group "vg0" not found\n')})
    with pytest.raises(DriverError, match='vgs on vg0 failed .*Volume group "vg0" not found'):
        await LvmBackend("vg0", runner=runner).free_bytes()


async def test_the_health_check_fails_below_the_threshold_and_names_the_group(tmp_path: Path) -> None:
    runner = RecordingRunner(stdout={"vgs": f"  {3 * GiB}\n"})
    health = HostHealth({"disk:volume_group": volume_group_probe(LvmBackend("vg0", runner=runner), 5)})
    await health.run()
    assert health.failing() == {"disk:volume_group": "3.0 GB free in volume group vg0, below 5 GB"}
    runner.stdout["vgs"] = f"  {8 * GiB}\n"
    await health.run()
    assert health.failing() == {}


def test_an_agent_on_lvm_checks_its_volume_group() -> None:
    net = NetNode("hv-1", FakeApplier())
    assert "disk:volume_group" not in agent_probes(FakeDriver("hv-1"), net, None, {}, 5)
    on_lvm = SimpleNamespace(disks=LvmBackend("vg0", runner=RecordingRunner()))  # a driver's root-disk backend
    assert "disk:volume_group" in agent_probes(on_lvm, net, None, {}, 5)  # type: ignore[arg-type]
