"""Helpers for tests with several cells (tests/stack, tests/integration): a server written into a cell as a
boot leaves it, and every page of a servers list."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.runtime import Cloud
from tests.clouds import V

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def put_server(cloud: Cloud, cell: str, project: str, name: str, minute: int) -> str:
    """A server row in `cell` and its mapping, as a boot leaves them (ACTIVE)."""
    sid, when = str(uuid.uuid4()), T0 + dt.timedelta(minutes=minute)
    with cloud.dbs.cell(cell).writer() as conn:
        conn.execute(insert(c.instances).values(
            uuid=sid, project_id=project, user_id="u", name=name, flavor_id="1",
            flavor={"vcpus": 1, "ram": 512, "disk": 1, "name": "m1.tiny"}, vm_state="active", power_state=1,
            host=f"hv-{cell}", created_at=when, updated_at=when))
    with cloud.dbs.global_db.writer() as conn:
        conn.execute(insert(g.instance_mappings).values(instance_uuid=sid, cell_name=cell, project_id=project))
    return sid


async def all_pages(api: Any, query: str, limit: int) -> list[str]:
    seen: list[str] = []
    url = f"/compute/v2.1/servers?limit={limit}&{query}"
    for _ in range(20):
        body = (await api.get(url, as_user="demo", headers=V)).json()
        seen += [s["id"] for s in body["servers"]]
        links = body.get("servers_links")
        if not links:
            return seen
        url = "/compute" + links[0]["href"].split("/compute", 1)[1]
    raise AssertionError("paging never ended")
