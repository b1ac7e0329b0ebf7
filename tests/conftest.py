"""Shared fixtures: databases (SQLite per test from one migrated template; MariaDB and PostgreSQL
per session, which must be running), a cloud wired on the in-process bus, and API clients."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from canopy.config import Settings
from canopy.db.engine import Databases
from canopy.db.migrate import upgrade_all
from canopy.runtime import Cloud
from canopy.seed import seed

MARIADB_SERVER = "mysql+pymysql://root@127.0.0.1:3306"
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _fresh_database(server: str, admin_db: str) -> Iterator[str]:
    name = f"canopy_t_{uuid.uuid4().hex[:10]}"
    engine = create_engine(f"{server}/{admin_db}", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"{server}/{name}"
    finally:
        with engine.connect() as conn:
            if server.startswith("postgresql"):
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A new, empty database on the machine's MariaDB (127.0.0.1:3306); its absence is a failure."""
    yield from _fresh_database(MARIADB_SERVER, "test")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL (127.0.0.1:5432); its absence is a failure."""
    yield from _fresh_database(POSTGRES_SERVER, "test")


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


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    settings = Settings(data_dir=data_dir, **overrides).resolved()
    settings.auth.token_secret = "test-secret"
    return settings


@pytest.fixture
def data_dir(tmp_path: Path, seeded_template: Path) -> Path:
    """A private copy of the seeded data folder."""
    target = tmp_path / "data"
    shutil.copytree(seeded_template, target)
    return target


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


class ApiClient:
    """An httpx client on the ASGI app that logs in as a seeded user."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://canopy.test")
        self._tokens: dict[str, str] = {}

    async def token(self, user: str, project: str | None = None) -> str:
        key = f"{user}/{project}"
        if key not in self._tokens:
            body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": user}}},
                "scope": {"project": {"name": project or user, "domain": {"id": "default"}}}}}
            resp = await self.http.post("/identity/v3/auth/tokens", json=body)
            assert resp.status_code == 201, resp.text
            self._tokens[key] = resp.headers["x-subject-token"]
        return self._tokens[key]

    async def request(self, method: str, path: str, *, as_user: str = "admin", project: str | None = None,
                      headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        hdrs = {"X-Auth-Token": await self.token(as_user, project), **(headers or {})}
        return await self.http.request(method, path, headers=hdrs, **kwargs)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("PUT", path, **kw)

    async def patch(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kw)


@pytest.fixture
async def api(cloud: Cloud) -> AsyncIterator[ApiClient]:
    """An API client against the cloud's app (users: admin/admin, demo/demo)."""
    from canopy.api.app import build_app

    client = ApiClient(build_app(cloud))
    try:
        yield client
    finally:
        await client.http.aclose()


BACKENDS = ("sqlite", "mariadb", "postgresql")


@pytest.fixture
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """The database URL for a test parametrized by backend (None: the SQLite copy in data_dir)."""
    name = getattr(request, "param", "sqlite")
    if name == "sqlite":
        return None
    return str(request.getfixturevalue("mariadb_url" if name == "mariadb" else "postgres_url"))


@contextlib.asynccontextmanager
async def in_process_cloud(settings: Any, hosts: int) -> AsyncIterator[Any]:
    """An AllInOne on `settings` with `hosts` simulated hypervisors and no HTTP port; `.api` is an
    ApiClient on its app. Stopped when the block ends."""
    from canopy.allinone import AllInOne
    from canopy.api.app import build_app

    aio = AllInOne(settings, hosts=hosts, serve_http=False)
    await aio.start()
    aio.api = ApiClient(build_app(aio.cloud))  # type: ignore[attr-defined]
    try:
        yield aio
    finally:
        await aio.api.http.aclose()  # type: ignore[attr-defined]
        await aio.stop()


@pytest.fixture
async def stack(data_dir: Path, backend_url: str | None) -> AsyncIterator[Any]:
    """A whole cloud in-process: api (no HTTP port), conductor, scheduler and 4 fake hypervisors.

    On SQLite by default; parametrize `backend_url` indirectly to run on MariaDB or PostgreSQL."""
    settings = make_settings(data_dir)
    if backend_url:
        settings.database.global_url = settings.database.cell_url = backend_url
    settings.fake.spawn_delay_s = 0.0
    settings.fake.op_delay_s = 0.0
    settings.fake.vcpus = 8
    settings.fake.memory_mb = 16384
    settings.fake.disk_gb = 200
    settings.conductor.stop_timeout_s = 0.5
    async with in_process_cloud(settings, 4) as aio:
        yield aio


async def wait_for_server(api: ApiClient, server_id: str, statuses: set[str], *, as_user: str = "admin",
                          timeout: float = 10.0) -> dict[str, Any]:
    """Poll a server until its status is one of `statuses`; fail with its last view otherwise."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = await api.get(f"/compute/v2.1/servers/{server_id}", as_user=as_user)
        if resp.status_code == 404 and "DELETED" in statuses:
            return {"status": "DELETED"}
        assert resp.status_code == 200, resp.text
        body = resp.json()["server"]
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"server {server_id} never reached {statuses}; last: {body}")
