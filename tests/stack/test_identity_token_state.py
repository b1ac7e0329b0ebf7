"""Issue 14, items 1-3 and the token Lows: revoked tokens stay revoked on every api process, tokens follow
the state of their user and project, unscoped tokens reach identity only, only owners and admins inspect
or revoke a token, malformed auth bodies are 400. Each test failed on main before this change."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from canopy.api.app import build_app
from canopy.api.token_state import TokenGuard
from canopy.clock import FakeClock
from canopy.runtime import Cloud
from tests.clouds import ApiClient

SERVICES = ("/compute/v2.1/servers", "/network/v2.0/networks", "/image/v2/images")
TOKENS = "/identity/v3/auth/tokens"


def password_body(user: str, password: str, project: str | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}}}
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return {"auth": auth}


async def login(api: ApiClient, user: str, password: str, project: str | None = None) -> httpx.Response:
    return await api.http.post(TOKENS, json=password_body(user, password, project))


async def token_of(api: ApiClient, user: str, password: str, project: str | None = None) -> str:
    resp = await login(api, user, password, project)
    assert resp.status_code == 201, resp.text
    return resp.headers["x-subject-token"]


async def rescope(api: ApiClient, token: str, project: str | None = None) -> httpx.Response:
    auth: dict[str, Any] = {"identity": {"methods": ["token"], "token": {"id": token}}}
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return await api.http.post(TOKENS, json={"auth": auth})


async def status(api: ApiClient, path: str, token: str) -> int:
    return (await api.http.get(path, headers={"X-Auth-Token": token})).status_code


async def new_member(api: ApiClient, name: str, project: str = "demo") -> tuple[str, str]:
    """A user with the member role on `project`: (user id, project id)."""
    resp = await api.post("/identity/v3/users", json={"user": {"name": name, "password": f"{name}-pw"}})
    assert resp.status_code == 201, resp.text
    uid = resp.json()["user"]["id"]
    pid = (await api.get(f"/identity/v3/projects?name={project}")).json()["projects"][0]["id"]
    rid = (await api.get("/identity/v3/roles?name=member")).json()["roles"][0]["id"]
    assert (await api.put(f"/identity/v3/projects/{pid}/users/{uid}/roles/{rid}")).status_code == 204
    return uid, pid


async def test_revoked_token_is_refused_everywhere_and_cannot_be_rescoped(api: ApiClient) -> None:
    token = await token_of(api, "demo", "demo", "demo")
    resp = await api.http.delete(TOKENS, headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert resp.status_code == 204
    for path in SERVICES:
        assert await status(api, path, token) == 401, path
    assert (await rescope(api, token, "demo")).status_code == 401


async def test_revocation_on_one_api_process_reaches_another_within_the_bound(cloud: Cloud) -> None:
    """Two apps on one database stand for two api processes; the second sees the event after its bound."""
    one, two = ApiClient(build_app(cloud)), ApiClient(build_app(cloud))
    clock = FakeClock()
    guard = TokenGuard(cloud.tokens, cloud.dbs.global_db, cloud.settings.auth.revocation_cache_s,
                       monotonic=clock.monotonic)
    two.app.state.guard = guard
    try:
        token = await token_of(one, "demo", "demo", "demo")
        assert await status(two, SERVICES[0], token) == 200   # process two has loaded the events now
        resp = await one.http.delete(TOKENS, headers={"X-Auth-Token": token, "X-Subject-Token": token})
        assert resp.status_code == 204
        assert guard.staleness_s <= 5
        clock.advance(guard.staleness_s)
        assert await status(two, SERVICES[0], token) == 401
    finally:
        await one.http.aclose()
        await two.http.aclose()


async def test_disabled_user_loses_access_and_cannot_rescope(api: ApiClient) -> None:
    uid, _ = await new_member(api, "carol")
    token = await token_of(api, "carol", "carol-pw", "demo")
    assert (await api.patch(f"/identity/v3/users/{uid}", json={"user": {"enabled": False}})).status_code == 200
    assert await status(api, SERVICES[0], token) == 401
    assert (await rescope(api, token, "demo")).status_code == 401
    assert (await login(api, "carol", "carol-pw", "demo")).status_code == 401


async def test_deleted_user_loses_access(api: ApiClient) -> None:
    uid, _ = await new_member(api, "dave")
    token = await token_of(api, "dave", "dave-pw", "demo")
    assert (await api.delete(f"/identity/v3/users/{uid}")).status_code == 204
    assert await status(api, SERVICES[1], token) == 401


async def test_password_change_ends_old_tokens_not_new_ones(api: ApiClient) -> None:
    uid, _ = await new_member(api, "erin")
    old = await token_of(api, "erin", "erin-pw", "demo")
    resp = await api.patch(f"/identity/v3/users/{uid}", json={"user": {"password": "erin-new"}})
    assert resp.status_code == 200
    assert await status(api, SERVICES[0], old) == 401
    new = await token_of(api, "erin", "erin-new", "demo")
    assert await status(api, SERVICES[0], new) == 200


async def test_role_removal_ends_tokens_on_that_project(api: ApiClient) -> None:
    uid, pid = await new_member(api, "frank")
    token = await token_of(api, "frank", "frank-pw", "demo")
    rid = (await api.get("/identity/v3/roles?name=member")).json()["roles"][0]["id"]
    assert (await api.delete(f"/identity/v3/projects/{pid}/users/{uid}/roles/{rid}")).status_code == 204
    assert await status(api, SERVICES[0], token) == 401


async def test_disabled_or_deleted_project_ends_its_tokens_and_refuses_logins(api: ApiClient) -> None:
    resp = await api.post("/identity/v3/projects", json={"project": {"name": "gone"}})
    pid = resp.json()["project"]["id"]
    await new_member(api, "gina", "gone")
    token = await token_of(api, "gina", "gina-pw", "gone")
    assert (await api.patch(f"/identity/v3/projects/{pid}", json={"project": {"enabled": False}})).status_code == 200
    assert await status(api, SERVICES[1], token) == 401
    assert (await login(api, "gina", "gina-pw", "gone")).status_code == 401
    assert (await api.patch(f"/identity/v3/projects/{pid}", json={"project": {"enabled": True}})).status_code == 200
    token = await token_of(api, "gina", "gina-pw", "gone")
    assert (await api.delete(f"/identity/v3/projects/{pid}")).status_code == 204
    resp = await api.http.post("/network/v2.0/networks", headers={"X-Auth-Token": token},
                               json={"network": {"name": "orphan"}})
    assert resp.status_code == 401


async def test_token_method_never_outlives_the_original(api: ApiClient) -> None:
    first = await login(api, "demo", "demo", "demo")
    again = await rescope(api, first.headers["x-subject-token"], "demo")
    assert again.status_code == 201
    assert again.json()["token"]["expires_at"] == first.json()["token"]["expires_at"]
    assert first.json()["token"]["audit_ids"][0] in again.json()["token"]["audit_ids"]


async def test_revoking_the_original_revokes_tokens_made_from_it(api: ApiClient) -> None:
    first = await token_of(api, "demo", "demo", "demo")
    child = (await rescope(api, first, "demo")).headers["x-subject-token"]
    await api.http.delete(TOKENS, headers={"X-Auth-Token": first, "X-Subject-Token": first})
    assert await status(api, SERVICES[0], child) == 401


async def test_unscoped_tokens_reach_identity_only(api: ApiClient) -> None:
    await api.post("/identity/v3/users", json={"user": {"name": "nobody", "password": "nobody-pw"}})
    token = await token_of(api, "nobody", "nobody-pw")
    for path in SERVICES:
        assert await status(api, path, token) == 403, path
    resp = await api.http.post("/compute/v2.1/servers", headers={"X-Auth-Token": token}, json={})
    assert resp.status_code == 403
    check = await api.http.get(TOKENS, headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert check.status_code == 200
    assert "project" not in check.json()["token"]


async def test_only_the_owner_or_an_admin_inspects_or_revokes_a_token(api: ApiClient) -> None:
    await new_member(api, "hank")
    hank = await token_of(api, "hank", "hank-pw", "demo")
    demo = await api.token("demo")
    for method in ("GET", "HEAD", "DELETE"):
        resp = await api.http.request(method, TOKENS, headers={"X-Auth-Token": demo, "X-Subject-Token": hank})
        assert resp.status_code == 403, method
    assert await status(api, SERVICES[0], hank) == 200
    admin = await api.token("admin")
    resp = await api.http.get(TOKENS, headers={"X-Auth-Token": admin, "X-Subject-Token": hank})
    assert resp.status_code == 200
    resp = await api.http.delete(TOKENS, headers={"X-Auth-Token": admin, "X-Subject-Token": hank})
    assert resp.status_code == 204
    assert await status(api, SERVICES[0], hank) == 401


async def test_non_ascii_token_is_401(api: ApiClient) -> None:
    resp = await api.http.get(SERVICES[0], headers={"X-Auth-Token": b"abc\xff.def"})
    assert resp.status_code == 401
    resp = await api.http.get(TOKENS, headers={"X-Auth-Token": await api.token("demo"),
                                               "X-Subject-Token": b"\xe9t\xe9.x"})
    assert resp.status_code == 404


def _malformed() -> list[dict[str, Any]]:
    user = {"name": "demo", "domain": {"id": "default"}, "password": "demo"}
    ident = {"methods": ["password"], "password": {"user": user}}
    return [
        {"identity": {"methods": ["password"], "password": "demo"}},
        {"identity": {"methods": ["password"], "password": {"user": {**user, "name": ["demo"]}}}},
        {"identity": ident, "scope": {"project": "demo"}},
        {"identity": {"methods": ["password"], "password": {"user": {**user, "password": 5}}}},
        {"identity": {"methods": "password", "password": {"user": user}}},
        {"identity": {"methods": ["password"], "password": {"user": {**user, "domain": "default"}}}},
        {"identity": ident, "scope": {"project": {"name": "demo", "domain": ["default"]}}},
        {"identity": {"methods": ["token"], "token": {"id": {"x": 1}}}},
        {"identity": ident, "scope": "demo"},
        {"identity": {"methods": [1], "password": {"user": user}}},
    ]


@pytest.mark.parametrize("auth", _malformed())
async def test_malformed_auth_bodies_are_400_in_keystone_shape(api: ApiClient, auth: dict[str, Any]) -> None:
    resp = await api.http.post(TOKENS, json={"auth": auth})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == 400
    assert "Invalid input for field" in resp.json()["error"]["message"]
