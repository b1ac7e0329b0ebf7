"""Fixtures every tier may use: one migrated and seeded SQLite data folder per session, copied per test.

The tiers: tests/unit (pure code and single components with fakes: no cloud, no server, no subprocess),
tests/stack (a whole cloud in-process on SQLite and the in-process bus; fixtures in tests/stack/conftest.py),
tests/integration (MariaDB, PostgreSQL, brokers, subprocesses, Open vSwitch, libvirt, QEMU) and tests/e2e
(`canopy` in subprocesses driven by openstacksdk and the openstack CLI). Plain helpers shared across
tiers are modules, not test modules: tests/clouds.py, tests/waiting.py, tests/databases.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from canopy.config import Settings
from canopy.db.engine import Databases
from canopy.db.migrate import upgrade_all
from canopy.seed import seed


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated and seeded SQLite data folder, copied for each test that needs a cloud."""
    folder = tmp_path_factory.mktemp("template")
    settings = Settings(data_dir=folder).resolved()
    dbs = Databases.from_urls(settings.database.global_url, {"cell1": settings.database.cell_url})
    upgrade_all(dbs)
    seed(dbs, folder / "images")
    dbs.dispose()
    return folder


@pytest.fixture
def data_dir(tmp_path: Path, seeded_template: Path) -> Path:
    """A private copy of the seeded data folder."""
    target = tmp_path / "data"
    shutil.copytree(seeded_template, target)
    return target


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the routes this run answered whose responses have no schema yet (tests/conformance.py)."""
    from tests.conformance import UNCHECKED

    if UNCHECKED:
        terminalreporter.write_line(f"routes answered without a response schema: {', '.join(sorted(UNCHECKED))}")
