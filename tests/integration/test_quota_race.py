"""Issue 14: the quota holds under a race. 50 creates at once against an instance quota of 10 leave
exactly 10 servers and a usage of 10, on every database (the reservation is one conditional write)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from tests.clouds import BACKENDS, V, project_id, server_body, wait_for_server
from tests.databases import MARIADB_SERVER, POSTGRES_SERVER, fresh_database


@pytest.fixture
def backend_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A database of this test's own: it leaves demo with a quota of 10 and 10 servers, which the tests
    sharing the session's database must not inherit."""
    name = getattr(request, "param", "sqlite")
    if name == "sqlite":
        yield None
    else:
        yield from fresh_database(MARIADB_SERVER if name == "mariadb" else POSTGRES_SERVER, "test")


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
async def test_fifty_parallel_creates_against_a_quota_of_ten_leave_exactly_ten(stack: Any) -> None:
    api, demo = stack.api, project_id(stack.cloud, "demo")
    resp = await api.put(f"/compute/v2.1/os-quota-sets/{demo}", json={"quota_set": {"instances": 10}})
    assert resp.status_code == 200, resp.text
    await api.token("demo")  # log in once, before the race

    async def create(n: int) -> tuple[int, str | None]:
        r = await api.post("/compute/v2.1/servers", json=server_body(name=f"race-{n}"), headers=V, as_user="demo")
        return r.status_code, r.json()["server"]["id"] if r.status_code == 202 else None

    answers = await asyncio.gather(*(create(n) for n in range(50)))
    assert sorted(s for s, _ in answers) == [202] * 10 + [403] * 40, answers
    for _, sid in answers:  # let the builds finish before the cloud stops
        if sid is not None:
            await wait_for_server(api, sid, {"ACTIVE", "ERROR"}, as_user="demo", timeout=60)

    def counts(conn: Any) -> tuple[int, int]:
        made = conn.execute(select(func.count()).select_from(c.instances)
                            .where(c.instances.c.project_id == demo)).scalar_one()
        used = conn.execute(select(g.quota_usage.c.instances_used).where(g.quota_usage.c.project_id == demo)).scalar()
        return int(made), int(used or 0)

    assert await stack.cloud.dbs.global_db.read_fresh(counts) == (10, 10)
