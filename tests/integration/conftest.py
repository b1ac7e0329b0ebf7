"""Integration fixtures shared across modules: private message brokers for the bus contract suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.brokers import NatsServer, RabbitNode


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
