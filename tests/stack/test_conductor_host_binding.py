"""The conductor refuses a message naming a host its sender's bus key is not bound to (CURVE puts the
sender's hosts in `sender_hosts`; canopy/rpc/curve.py): no host row is written for the impostor."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from canopy.db import tables_cell as c
from canopy.rpc.calls import Heartbeat, RegisterHost
from canopy.rpc.curve import ImpersonationError, sender_hosts


def register(host: str) -> RegisterHost:
    return RegisterHost(host=host, hypervisor_type="fake", hypervisor_version=1, vcpus=4, memory_mb=4096,
                        local_gb=10)


def host_names(stack: Any) -> set[str]:
    with stack.cloud.dbs.default_cell.reader_fresh() as conn:
        return set(conn.execute(select(c.hosts.c.name)).scalars())


async def test_register_and_heartbeat_for_another_host_are_refused(stack: Any) -> None:
    token = sender_hosts.set(frozenset({"hv-bound-1", "hv-bound-2"}))
    try:
        with pytest.raises(ImpersonationError):
            await stack.conductor.handle(register("hv-someone-else"))
        with pytest.raises(ImpersonationError):
            await stack.conductor.handle(Heartbeat(binary="canopy-agent", host="hv-someone-else", sent_at=0.0))
        await stack.conductor.handle(register("hv-bound-2"))
    finally:
        sender_hosts.reset(token)
    names = host_names(stack)
    assert "hv-bound-2" in names and "hv-someone-else" not in names
    await stack.conductor.handle(register("hv-unrestricted"))  # no CURVE key in play: any host
    assert "hv-unrestricted" in host_names(stack)
