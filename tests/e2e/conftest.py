"""The end-to-end tests' shared cloud: one `canopy all-in-one` subprocess for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.running import RunningCloud, run_all_in_one


@pytest.fixture(scope="session")
def running_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    """`canopy all-in-one` on a free port with 4 simulated hypervisors; stopped by its PID afterwards."""
    env = {"CANOPY_FAKE__SPAWN_DELAY_S": "0.05", "CANOPY_FAKE__OP_DELAY_S": "0.02",
           "CANOPY_FAKE__VCPUS": "16", "CANOPY_FAKE__MEMORY_MB": "32768", "CANOPY_FAKE__DISK_GB": "500"}
    with run_all_in_one(tmp_path_factory.mktemp("e2e"), 4, env) as cloud:
        yield cloud
