"""Issue 14 deliverable 2: a token revoked through one `canopy api` process is refused by a second `canopy
api` process on the same database within the documented bound (`auth.revocation_cache_s`, canopy/api/
token_state.py), and so are the tokens of a user, or of a reseller's domain, disabled through the first.
Each process is a real subprocess; the database is SQLite, MariaDB or PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clouds import ROOT, free_port
from tests.databases import MARIADB_SERVER, POSTGRES_SERVER, fresh_database

BOUND_S = 2.0          # CANOPY_AUTH__REVOCATION_CACHE_S given to both processes
LATENCY_ROOM_S = 3.0   # one request's round trip on a loaded 2-core machine, on top of the bound


def _env(folder: Path, db_url: str | None) -> dict[str, str]:
    env = {**os.environ, "CANOPY_AUTH__REVOCATION_CACHE_S": str(BOUND_S)}
    if db_url:
        env["CANOPY_DATABASE__GLOBAL_URL"] = db_url
        env["CANOPY_DATABASE__CELL_URL"] = db_url
    return env


@contextlib.contextmanager
def two_apis(folder: Path, db_url: str | None) -> Iterator[tuple[str, str]]:
    """Two `canopy api` processes on one database and one token secret; stopped by their PIDs."""
    canopy = [sys.executable, "-m", "canopy.cli"]
    env = _env(folder, db_url)
    for cmd in (["db", "upgrade"], ["db", "seed"]):
        subprocess.run([*canopy, *cmd, "--data-dir", str(folder)], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=180)
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, port in enumerate(ports):
            with (folder / f"api-{i}.log").open("wb") as log:
                procs.append(subprocess.Popen([*canopy, "api", "--data-dir", str(folder)], cwd=ROOT,
                                              env={**env, "CANOPY_API__PORT": str(port)}, stdout=log,
                                              stderr=subprocess.STDOUT))
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        deadline = time.monotonic() + 90
        for url in urls:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/identity/v3", timeout=2).status_code == 200:
                        break
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    logs = "\n".join(p.read_text()[-2000:] for p in folder.glob("api-*.log"))
                    raise RuntimeError(f"the api processes did not start:\n{logs}")
                time.sleep(0.1)
        yield urls[0], urls[1]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _token(url: str, user: str, password: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": user, "domain": {"id": "default"}}}}}
    resp = httpx.post(url + "/identity/v3/auth/tokens", json=body, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.headers["x-subject-token"]


def _status(url: str, token: str) -> int:
    return httpx.get(url + "/network/v2.0/networks", headers={"X-Auth-Token": token}, timeout=30).status_code


def _refused_after(url: str, token: str, since: float) -> float:
    """Seconds from `since` until `url` refuses the token (polling the other process; gives up at 3x the room)."""
    while time.monotonic() - since < 3 * (BOUND_S + LATENCY_ROOM_S):
        if _status(url, token) == 401:
            return time.monotonic() - since
        time.sleep(0.05)
    raise AssertionError(f"{url} still accepts the token")


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def own_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A database of this test's own (it disables users and domains: the session's shared one must not see it)."""
    if request.param == "sqlite":
        yield None
    else:
        yield from fresh_database(MARIADB_SERVER if request.param == "mariadb" else POSTGRES_SERVER, "test")


def test_a_token_revoked_on_one_api_is_refused_by_another_within_the_bound(
        tmp_path: Path, own_database: str | None) -> None:
    with two_apis(tmp_path, own_database) as (first, second):
        token = _token(first, "demo", "demo")
        assert _status(first, token) == 200 and _status(second, token) == 200  # the second has loaded events
        resp = httpx.delete(first + "/identity/v3/auth/tokens", timeout=30,
                            headers={"X-Auth-Token": token, "X-Subject-Token": token})
        assert resp.status_code == 204, resp.text
        revoked_at = time.monotonic()
        assert _status(first, token) == 401  # the revoking process at once
        assert _refused_after(second, token, revoked_at) <= BOUND_S + LATENCY_ROOM_S
        # and a user disabled through the first process loses its tokens on the second
        admin = _token(first, "admin", "admin")
        users = httpx.get(first + "/identity/v3/users?name=demo", headers={"X-Auth-Token": admin}, timeout=30)
        demo_id = users.json()["users"][0]["id"]
        fresh = _token(first, "demo", "demo")
        assert _status(second, fresh) == 200
        resp = httpx.patch(f"{first}/identity/v3/users/{demo_id}", headers={"X-Auth-Token": admin}, timeout=30,
                           json={"user": {"enabled": False}})
        assert resp.status_code == 200, resp.text
        disabled_at = time.monotonic()
        assert _refused_after(second, fresh, disabled_at) <= BOUND_S + LATENCY_ROOM_S
        # and a reseller's domain disabled through the first ends its customers' tokens on the second
        customer = _domain_customer(first, admin)
        assert _status(second, customer["token"]) == 200
        resp = httpx.patch(f"{first}/identity/v3/domains/{customer['domain']}", headers={"X-Auth-Token": admin},
                           json={"domain": {"enabled": False}}, timeout=30)
        assert resp.status_code == 200, resp.text
        disabled_at = time.monotonic()
        assert _refused_after(second, customer["token"], disabled_at) <= BOUND_S + LATENCY_ROOM_S


def _domain_customer(url: str, admin: str) -> dict[str, str]:
    """A domain with a user holding member on a project of it; the user's project-scoped token."""
    h = {"X-Auth-Token": admin}

    def post(path: str, body: dict[str, object]) -> dict[str, str]:
        resp = httpx.post(f"{url}/identity/v3/{path}", headers=h, json=body, timeout=30)
        assert resp.status_code == 201, resp.text
        return dict(next(iter(resp.json().values())))

    domain = post("domains", {"domain": {"name": f"resell-{uuid.uuid4().hex[:6]}"}})["id"]
    user = post("users", {"user": {"name": "cust", "password": "cust", "domain_id": domain}})["id"]
    project = post("projects", {"project": {"name": "cust", "domain_id": domain}})["id"]
    member = httpx.get(f"{url}/identity/v3/roles?name=member", headers=h, timeout=30).json()["roles"][0]["id"]
    resp = httpx.put(f"{url}/identity/v3/projects/{project}/users/{user}/roles/{member}", headers=h, timeout=30)
    assert resp.status_code == 204, resp.text
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "cust", "domain": {"id": domain}, "password": "cust"}}},
        "scope": {"project": {"id": project}}}}
    login = httpx.post(url + "/identity/v3/auth/tokens", json=body, timeout=30)
    assert login.status_code == 201, login.text
    return {"domain": domain, "token": login.headers["x-subject-token"]}
