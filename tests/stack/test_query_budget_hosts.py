"""A boot's SQL statements do not depend on the size of the fleet: the same on 4 hosts as on 40."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.clouds import in_process_cloud, stack_settings
from tests.stack.test_query_budget import measure_boot, quiet


async def statements_of_a_boot(data_dir: Path, hosts: int, monkeypatch: Any) -> int:
    async with in_process_cloud(stack_settings(data_dir), hosts) as stack:
        # logs in, creates the quota row and the default group, fills the caches, and gives the host its
        # first port in the group (which fetches the group once); the measured boot goes to the same host,
        # while the scheduler still weighs the whole fleet
        await measure_boot(stack, "warm-up", availability_zone="nova:hv-0001")
        quiet(stack, monkeypatch)
        return await measure_boot(stack, f"on {hosts} hosts", availability_zone="nova:hv-0001")


async def test_a_boot_costs_the_same_statements_on_4_and_40_hosts(tmp_path: Path, monkeypatch: Any) -> None:
    small = await statements_of_a_boot(tmp_path / "small", 4, monkeypatch)
    large = await statements_of_a_boot(tmp_path / "large", 40, monkeypatch)
    assert small <= 22, small  # the boot budget (21) + the named zone's existence check
    assert large == small, (small, large)
