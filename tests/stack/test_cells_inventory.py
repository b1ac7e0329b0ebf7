"""The physical inventory (issue 19): data centers, rows, racks and hosts through the admin API
`/compute/v2.1/canopy-inventory/…` and `canopy inventory`, in Nova's error and paging shapes; a rack's
cabling feeds the scheduler's segment reachability, and a host's rack reaches its row in the cell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from typer.testing import CliRunner

from canopy.cli import app
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.network import reachability
from canopy.seed import PUBLIC_NETWORK_ID

INV = "/compute/v2.1/canopy-inventory"


async def make(api: Any, kind: str, member: str, body: dict[str, Any], status: int = 201) -> Any:
    resp = await api.post(f"{INV}/{kind}", json={member: body})
    assert resp.status_code == status, resp.text
    return resp.json()[member] if status == 201 else resp.json()


async def segment(api: Any, name: str, racks: list[str] | None = None) -> str:
    body: dict[str, Any] = {"network_id": PUBLIC_NETWORK_ID, "network_type": "flat", "physical_network": name}
    if racks is not None:
        body["canopy:racks"] = racks
    resp = await api.post("/network/v2.0/segments", json={"segment": body})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["segment"]["id"])


async def test_inventory_records_admin_only_shapes_and_errors(api: Any) -> None:
    dc = await make(api, "datacenters", "datacenter", {"name": "dc-east", "description": "Frankfurt"})
    assert dc["name"] == "dc-east" and dc["cell_name"] is None and dc["created_at"]
    row = await make(api, "rows", "row", {"name": "row-a", "datacenter": "dc-east"})
    rack = await make(api, "racks", "rack", {"name": "r01", "row_id": row["id"]})
    assert rack["datacenter"] == "dc-east" and rack["segment_id"] is None
    host = await make(api, "hosts", "host", {"name": "hv-9001", "rack_id": rack["id"], "serial": "SN-1",
                                             "macs": ["52:54:00:AA:00:01"]})
    assert host["state"] == "expected" and host["macs"] == ["52:54:00:aa:00:01"]
    # Only admins; the compute error shape naming the cause.
    assert (await api.get(f"{INV}/racks", as_user="demo")).status_code == 403
    assert (await api.post(f"{INV}/rows", as_user="demo", json={"row": {}})).status_code == 403
    dup = await make(api, "datacenters", "datacenter", {"name": "dc-east"}, status=409)
    assert dup["conflictingRequest"]["message"] == "Datacenter dc-east already exists."
    orphan = await make(api, "rows", "row", {"name": "row-b", "datacenter": "nowhere"}, status=400)
    assert "Datacenter nowhere" in orphan["badRequest"]["message"]
    bad_mac = await make(api, "hosts", "host", {"name": "hv-2", "rack_id": rack["id"], "macs": ["zz"]}, status=400)
    assert "macs" in bad_mac["badRequest"]["message"]
    extra = await make(api, "racks", "rack", {"name": "r02", "row_id": row["id"], "color": "red"}, status=400)
    assert "'color' was unexpected" in extra["badRequest"]["message"]
    same_serial = await make(api, "hosts", "host", {"name": "hv-3", "rack_id": rack["id"], "serial": "SN-1"},
                             status=409)
    assert "SN-1" in same_serial["conflictingRequest"]["message"]
    assert (await make(api, "rows", "row", {"name": "bad name!", "datacenter": "dc-east"}, status=400))
    missing = await api.get(f"{INV}/hosts/nope")
    assert missing.status_code == 404 and missing.json()["itemNotFound"]["message"] == "Host nope could not be found."
    assert (await api.get(f"{INV}/planets")).status_code == 404
    # A rack moves only between rows of its data center; a non-empty rack cannot go.
    await make(api, "datacenters", "datacenter", {"name": "dc-west"})
    west_row = await make(api, "rows", "row", {"name": "row-a", "datacenter": "dc-west"})
    moved = await api.put(f"{INV}/racks/{rack['id']}", json={"rack": {"row_id": west_row["id"]}})
    assert moved.status_code == 409 and "dc-east" in moved.json()["conflictingRequest"]["message"]
    busy = await api.delete(f"{INV}/racks/{rack['id']}")
    assert busy.status_code == 409 and "1 hosts" in busy.json()["conflictingRequest"]["message"]
    changed = await api.put(f"{INV}/hosts/hv-9001", json={"host": {"serial": "SN-9", "state": "draining"}})
    assert changed.status_code == 200 and changed.json()["host"]["serial"] == "SN-9"
    assert (await api.put(f"{INV}/hosts/hv-9001", json={"host": {"name": "x"}})).status_code == 400
    assert (await api.delete(f"{INV}/hosts/hv-9001")).status_code == 204
    assert (await api.delete(f"{INV}/racks/{rack['id']}")).status_code == 204


async def test_inventory_lists_page_with_markers_and_filters(api: Any) -> None:
    await make(api, "datacenters", "datacenter", {"name": "dc1"})
    row = await make(api, "rows", "row", {"name": "row-a", "datacenter": "dc1"})
    rack = await make(api, "racks", "rack", {"name": "r01", "row_id": row["id"]})
    for n in range(5):
        await make(api, "hosts", "host", {"name": f"hv-{n:02d}", "rack_id": rack["id"]})
    first = (await api.get(f"{INV}/hosts?limit=2")).json()
    assert [h["name"] for h in first["hosts"]] == ["hv-00", "hv-01"]
    nxt = first["hosts_links"][0]["href"]
    assert first["hosts_links"][0]["rel"] == "next" and "marker=hv-01" in nxt
    seen = [h["name"] for h in first["hosts"]]
    marker = "hv-01"
    while True:
        page = (await api.get(f"{INV}/hosts?limit=2&marker={marker}")).json()
        seen += [h["name"] for h in page["hosts"]]
        if "hosts_links" not in page:
            break
        marker = page["hosts"][-1]["name"]
    assert seen == [f"hv-{n:02d}" for n in range(5)]
    assert (await api.get(f"{INV}/hosts?marker=ghost")).json()["badRequest"]["message"] == "marker [ghost] not found"
    filtered = (await api.get(f"{INV}/racks?datacenter=dc1")).json()["racks"]
    assert [r["name"] for r in filtered] == ["r01"]
    assert (await api.get(f"{INV}/racks?datacenter=nowhere")).json()["racks"] == []
    bad = await api.get(f"{INV}/racks?colour=red")
    assert bad.status_code == 400 and "colour" in bad.json()["badRequest"]["message"]
    assert (await api.get(f"{INV}/hosts?limit=-1")).status_code == 400


async def test_rack_cabling_is_what_segment_reachability_reads(api: Any, cloud: Any) -> None:
    """Cabling a rack through the inventory writes the mapping the scheduler reads; re-cabling moves it;
    a rack mapped through the segments API (the older way) keeps its mapping."""
    s1 = await segment(api, "edge-1", ["dc1/r09"])
    s2 = await segment(api, "edge-2")
    await make(api, "datacenters", "datacenter", {"name": "dc1"})
    row = await make(api, "rows", "row", {"name": "row-a", "datacenter": "dc1"})
    rack = await make(api, "racks", "rack", {"name": "r01", "row_id": row["id"], "segment_id": s1})

    async def mapped() -> dict[str, list[str]]:
        return await cloud.dbs.global_db.read(reachability.load_segment_racks, [PUBLIC_NETWORK_ID])

    assert sorted((await mapped())[s1]) == ["dc1/r01", "dc1/r09"]
    await api.put(f"{INV}/racks/{rack['id']}", json={"rack": {"segment_id": s2}})
    after = await mapped()
    assert after[s1] == ["dc1/r09"] and after[s2] == ["dc1/r01"]
    unknown = await api.put(f"{INV}/racks/{rack['id']}", json={"rack": {"segment_id": "no-such-segment"}})
    assert unknown.status_code == 400 and "no-such-segment" in unknown.json()["badRequest"]["message"]
    await api.put(f"{INV}/racks/{rack['id']}", json={"rack": {"segment_id": None}})
    assert s2 not in await mapped()


async def test_host_rack_reaches_its_cell_row(stack: Any) -> None:
    """A registered host moved to another rack in the inventory stands there in its cell (the scheduler's
    index reads the cell's hosts table)."""
    api = stack.api
    await make(api, "datacenters", "datacenter", {"name": "dc9"})
    row = await make(api, "rows", "row", {"name": "row-z", "datacenter": "dc9"})
    rack = await make(api, "racks", "rack", {"name": "rz1", "row_id": row["id"]})
    await make(api, "hosts", "host", {"name": "hv-0001", "rack_id": rack["id"]})
    cell = stack.cloud.dbs.cell(stack.cloud.cell_name)

    def placed(conn: Any) -> tuple[str, str]:
        found = conn.execute(select(c.hosts.c.datacenter, c.hosts.c.rack).where(c.hosts.c.name == "hv-0001")).one()
        return found[0], found[1]

    assert await cell.read_fresh(placed) == ("dc9", "rz1")


def test_cli_creates_lists_and_refuses(data_dir: Path) -> None:
    """`canopy inventory` writes through the same checks as the API."""
    run = CliRunner().invoke
    dd = ["--data-dir", str(data_dir)]
    assert run(app, ["inventory", "create", "datacenters", "name=dc1", *dd]).exit_code == 0
    made = run(app, ["inventory", "create", "rows", "name=row-a", "datacenter=dc1", "--json", *dd])
    assert made.exit_code == 0, made.output
    row_id = json.loads(made.output)[0]["id"]
    assert run(app, ["inventory", "create", "racks", "name=r01", f"row_id={row_id}", *dd]).exit_code == 0
    refused = run(app, ["inventory", "create", "rows", "name=row-b", "datacenter=mars", *dd])
    assert refused.exit_code == 1 and "Datacenter mars could not be found." in refused.output
    listed = run(app, ["inventory", "list", "racks", "--filter", "datacenter=dc1", "--json", *dd])
    assert [r["name"] for r in json.loads(listed.output)] == ["r01"]
    changed = run(app, ["inventory", "set", "datacenters", "dc1", "description=main", "--json", *dd])
    assert json.loads(changed.output)[0]["description"] == "main"
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{data_dir / 'canopy.db'}")
    with engine.connect() as conn:
        assert conn.execute(select(g.racks.c.name)).scalars().all() == ["r01"]
    engine.dispose()
