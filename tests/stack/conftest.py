"""A cloud in-process: SQLite (a copy of the seeded template), the in-process bus, the api's ASGI app
without a port, and for `stack` a conductor, a scheduler and 4 fake hypervisors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from canopy.observability.logs import make_handler
from canopy.runtime import Cloud
from tests.clouds import ApiClient, in_process_cloud, make_settings, stack_settings


@pytest.fixture
async def cloud(data_dir: Path) -> AsyncIterator[Cloud]:
    """A cloud on SQLite and the in-process bus, with no services running (api only)."""
    from canopy.rpc.local import LocalTransport
    from canopy.runtime import open_databases

    settings = make_settings(data_dir)
    dbs = open_databases(settings)
    bus = LocalTransport()
    await bus.start()
    c = Cloud(settings=settings, dbs=dbs, bus=bus)
    try:
        yield c
    finally:
        await bus.close()
        dbs.dispose()


@pytest.fixture
async def api(cloud: Cloud) -> AsyncIterator[ApiClient]:
    """An API client against the cloud's app (users: admin/admin, demo/demo)."""
    from canopy.api.app import build_app, close_app

    client = ApiClient(build_app(cloud))
    try:
        yield client
    finally:
        await client.http.aclose()
        await close_app(client.app)


@pytest.fixture
async def other(api: ApiClient) -> str:
    """A second project and member user, both named `other`, made through the identity API."""
    project = await api.post("/identity/v3/projects", json={"project": {"name": "other"}})
    user = await api.post("/identity/v3/users", json={"user": {"name": "other", "password": "other"}})
    roles = await api.get("/identity/v3/roles?name=member")
    pid, uid, rid = project.json()["project"]["id"], user.json()["user"]["id"], roles.json()["roles"][0]["id"]
    assert (await api.put(f"/identity/v3/projects/{pid}/users/{uid}/roles/{rid}")).status_code == 204
    return "other"


@pytest.fixture
async def stack(data_dir: Path) -> AsyncIterator[Any]:
    """A whole cloud in-process on SQLite: api (no HTTP port), conductor, scheduler and 4 fake hypervisors."""
    async with in_process_cloud(stack_settings(data_dir), 4) as aio:
        yield aio


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    """Every canopy.* line at INFO and above as JSON into a file, the way the services write them."""
    path = tmp_path / "canopy.json"
    handler = make_handler("json", str(path))
    logger = logging.getLogger("canopy")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
