"""Drain and retire (issue 19), through the compute API as an admin: a host holding servers is disabled and
emptied (live where asked and possible, else cold), every server ends on another host of the same cell,
and the empty, disabled host is retired; retiring an enabled or occupied host is refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.drain import DrainError, HostDrainer
from tests.clouds import V, server_body, wait_for_server

SOURCE = "hv-0001"


async def boot_on(stack: Any, name: str, host: str) -> str:
    resp = await stack.api.post("/compute/v2.1/servers", headers=V,
                                json=server_body(name=name, availability_zone=f"nova:{host}"))
    assert resp.status_code == 202, resp.text
    sid = str(resp.json()["server"]["id"])
    await wait_for_server(stack.api, sid, {"ACTIVE"})
    return sid


async def admin_http(stack: Any) -> httpx.AsyncClient:
    token = await stack.api.token("admin")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.api.app), base_url="http://canopy.test",
                             headers={"X-Auth-Token": token})


@pytest.mark.parametrize("live", [True, False], ids=["live", "cold"])
async def test_drain_moves_every_server_to_another_host_then_retire(stack: Any, live: bool) -> None:
    ids = [await boot_on(stack, f"vm-{n}", SOURCE) for n in range(3)]
    resp = await stack.api.post(f"/compute/v2.1/servers/{ids[2]}/action", json={"os-stop": None})
    assert resp.status_code == 202
    await wait_for_server(stack.api, ids[2], {"SHUTOFF"})
    http = await admin_http(stack)
    try:
        drainer = HostDrainer(http, poll_s=0.02, timeout_s=60)
        with pytest.raises(DrainError, match="is not drained: its service is enabled"):
            await drainer.retire(SOURCE)
        seen: list[str] = []
        moves = await drainer.drain(SOURCE, live=live, progress=lambda m: seen.append(m.server_id))
        assert sorted(seen) == sorted(ids) and all(m.moved for m in moves), moves
        hows = {m.server_id: m.how for m in moves}
        assert hows == {ids[0]: "live" if live else "cold", ids[1]: "live" if live else "cold", ids[2]: "cold"}
        for sid in ids:
            s = (await stack.api.get(f"/compute/v2.1/servers/{sid}", headers=V)).json()["server"]
            assert s["OS-EXT-SRV-ATTR:host"] not in ("", None, SOURCE), s
            assert s["status"] == ("SHUTOFF" if sid == ids[2] else "ACTIVE"), s
        assert await drainer.servers_on(SOURCE) == []
        svc = await drainer.service(SOURCE)
        assert svc["status"] == "disabled" and "draining" in svc["disabled_reason"]
        await drainer.retire(SOURCE)
        with pytest.raises(DrainError, match="has no compute service"):
            await drainer.service(SOURCE)
    finally:
        await http.aclose()
    with stack.cloud.dbs.cell("cell1").reader() as conn:
        assert conn.execute(select(c.hosts.c.name).where(c.hosts.c.name == SOURCE)).first() is None
        hosts = set(conn.execute(select(c.instances.c.host).where(c.instances.c.uuid.in_(ids))).scalars())
        assert hosts and SOURCE not in hosts
    with stack.cloud.dbs.global_db.reader() as conn:
        assert conn.execute(select(g.host_mappings).where(g.host_mappings.c.host == SOURCE)).first() is None


async def test_retire_refuses_a_disabled_host_that_still_holds_servers(stack: Any) -> None:
    sid = await boot_on(stack, "stays", "hv-0002")
    http = await admin_http(stack)
    try:
        drainer = HostDrainer(http, poll_s=0.02, timeout_s=60)
        svc = await drainer.service("hv-0002")
        resp = await http.put(f"/compute/v2.1/os-services/{svc['id']}", headers=V, json={"status": "disabled"})
        assert resp.status_code == 200, resp.text
        with pytest.raises(DrainError, match=f"still holds 1 server\\(s\\): {sid}"):
            await drainer.retire("hv-0002")
        assert (await drainer.service("hv-0002"))["status"] == "disabled"  # nothing removed
    finally:
        await http.aclose()


async def test_a_server_that_cannot_move_is_reported_with_its_reason(stack: Any) -> None:
    sid = await boot_on(stack, "paused", "hv-0003")
    resp = await stack.api.post(f"/compute/v2.1/servers/{sid}/action", json={"pause": None})
    assert resp.status_code == 202
    await wait_for_server(stack.api, sid, {"PAUSED"})
    http = await admin_http(stack)
    try:
        moves = await HostDrainer(http, poll_s=0.02, timeout_s=60).drain("hv-0003", live=True)
    finally:
        await http.aclose()
    assert [(m.server_id, m.moved) for m in moves] == [(sid, False)]
    assert "status PAUSED" in moves[0].error
