"""Several cells on real databases behind one api (issue 19): the configured cell on SQLite, a cell on
MariaDB and one on PostgreSQL; the list merges and pages across the three, and a cell whose server
refuses connections (a closed port) is listed as UNKNOWN while the others work, then comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from canopy.db.cells import register_cell
from canopy.db.engine import Database
from canopy.db.migrate import upgrade_part
from canopy.runtime import Cloud
from tests.cells import T0, all_pages, put_server
from tests.clouds import ApiClient, V, free_port, make_settings, project_id


@pytest.fixture
async def cloud(data_dir: Path) -> AsyncIterator[Cloud]:
    """The api's cloud on the SQLite copy (global database and the configured cell), no services."""
    from canopy.rpc.local import LocalTransport
    from canopy.runtime import open_databases

    settings = make_settings(data_dir)
    dbs, bus = open_databases(settings), LocalTransport()
    await bus.start()
    try:
        yield Cloud(settings=settings, dbs=dbs, bus=bus)
    finally:
        await bus.close()
        dbs.dispose()


@pytest.fixture
async def api(cloud: Cloud) -> AsyncIterator[ApiClient]:
    from canopy.api.app import build_app

    client = ApiClient(build_app(cloud))
    try:
        yield client
    finally:
        await client.http.aclose()


async def test_list_across_sqlite_mariadb_postgresql_with_one_down(cloud: Cloud, api: Any, data_dir: Path,
                                                                   mariadb_url: str, postgres_url: str) -> None:
    for name, url in (("cell2", mariadb_url), ("cell3", postgres_url)):
        with cloud.dbs.global_db.writer() as conn:
            register_cell(conn, name, url, "", T0)
        upgrade_part(cloud.dbs.add_cell(name, url).primary, "cell")
    demo = project_id(cloud, "demo")
    made = {put_server(cloud, f"cell{1 + m % 3}", demo, f"vm-{m}", m): f"cell{1 + m % 3}" for m in range(9)}
    one_page = (await api.get("/compute/v2.1/servers/detail", as_user="demo", headers=V)).json()["servers"]
    assert [s["id"] for s in one_page] == sorted(made, key=lambda sid: -int(
        next(s["name"] for s in one_page if s["id"] == sid)[3:]))
    assert await all_pages(api, "", 2) == [s["id"] for s in one_page]

    alive = cloud.dbs.cells["cell2"]
    dead = Database(f"mysql://root@127.0.0.1:{free_port()}/gone", execution="thread")
    cloud.dbs.cells["cell2"] = dead  # MariaDB's server of cell2 stops answering: connections are refused
    try:
        page = (await api.get("/compute/v2.1/servers/detail", as_user="demo", headers=V)).json()["servers"]
        assert {s["id"]: s["status"] for s in page} == {
            sid: "UNKNOWN" if cell == "cell2" else "ACTIVE" for sid, cell in made.items()}
    finally:
        cloud.dbs.cells["cell2"] = alive
        dead.dispose()
    back = (await api.get("/compute/v2.1/servers/detail", as_user="demo", headers=V)).json()["servers"]
    assert [s["id"] for s in back] == [s["id"] for s in one_page]
