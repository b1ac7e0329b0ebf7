"""Integration fixtures shared across modules: private databases on the machine's MariaDB and PostgreSQL,
private message brokers for the bus contract suite, and the in-process cloud on any of the databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clouds import in_process_cloud, stack_settings
from tests.databases import MARIADB_SERVER, POSTGRES_SERVER, fresh_database
from tests.integration.brokers import NatsServer, RabbitNode


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A new, empty database on the machine's MariaDB (127.0.0.1:3306); its absence is a failure."""
    yield from fresh_database(MARIADB_SERVER, "test")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL (127.0.0.1:5432); its absence is a failure."""
    yield from fresh_database(POSTGRES_SERVER, "test")


@pytest.fixture
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """The database URL for a test parametrized by backend (None: the SQLite copy in data_dir)."""
    name = getattr(request, "param", "sqlite")
    if name == "sqlite":
        return None
    return str(request.getfixturevalue("mariadb_url" if name == "mariadb" else "postgres_url"))


@pytest.fixture
async def stack(data_dir: Path, backend_url: str | None) -> AsyncIterator[Any]:
    """A whole cloud in-process (as tests/stack's), on SQLite or, with `backend_url` parametrized
    indirectly, on MariaDB or PostgreSQL."""
    async with in_process_cloud(stack_settings(data_dir, backend_url), 4) as aio:
        yield aio


@pytest.fixture(scope="session")
def nats_broker() -> Iterator[str]:
    """The URL of a private nats-server for this session."""
    with NatsServer.start() as server:
        yield server.url


@pytest.fixture(scope="session")
def amqp_broker() -> Iterator[str]:
    """The URL of a private RabbitMQ node for this session (it takes a few seconds to start)."""
    with RabbitNode.start() as node:
        yield node.url
