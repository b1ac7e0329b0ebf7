"""A boot's SQL statements do not depend on the size of the fleet: the same on 4 hosts as on 40."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.clouds import in_process_cloud, stack_settings
from tests.stack.test_query_budget import measure_boot, quiet


async def statements_of_a_boot(data_dir: Path, hosts: int, monkeypatch: Any) -> int:
    async with in_process_cloud(stack_settings(data_dir), hosts) as stack:
        await measure_boot(stack, "warm-up")  # logs in, creates the quota row, fills the caches
        quiet(stack, monkeypatch)
        return await measure_boot(stack, f"on {hosts} hosts")


async def test_a_boot_costs_the_same_statements_on_4_and_40_hosts(tmp_path: Path, monkeypatch: Any) -> None:
    small = await statements_of_a_boot(tmp_path / "small", 4, monkeypatch)
    large = await statements_of_a_boot(tmp_path / "large", 40, monkeypatch)
    assert small <= 20, small
    assert large == small, (small, large)
