"""Token issue and validation through the Identity API."""

from __future__ import annotations

from tests.clouds import ApiClient


async def test_password_auth_returns_token_and_catalog(api: ApiClient) -> None:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"name": "Default"}, "password": "demo"}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}
    resp = await api.http.post("/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 201
    token = resp.json()["token"]
    assert token["project"]["name"] == "demo"
    assert {r["name"] for r in token["roles"]} >= {"member", "reader"}
    types = {entry["type"] for entry in token["catalog"]}
    assert types == {"identity", "compute", "network", "image"}
    check = await api.http.get("/identity/v3/auth/tokens", headers={
        "X-Auth-Token": resp.headers["x-subject-token"], "X-Subject-Token": resp.headers["x-subject-token"]})
    assert check.status_code == 200
    assert check.json()["token"]["user"]["name"] == "demo"


async def test_wrong_password_is_401_in_identity_shape(api: ApiClient) -> None:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"id": "default"}, "password": "nope"}}}}}
    resp = await api.http.post("/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == 401
    assert "x-openstack-request-id" in resp.headers


async def test_forged_token_is_rejected(api: ApiClient) -> None:
    token = await api.token("demo")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    resp = await api.http.get("/compute/v2.1/servers", headers={"X-Auth-Token": forged})
    assert resp.status_code == 401
    assert resp.json()["unauthorized"]["code"] == 401


async def test_unversioned_identity_lists_v3(api: ApiClient) -> None:
    resp = await api.http.get("/identity")
    assert resp.status_code == 300
    assert resp.json()["versions"]["values"][0]["id"].startswith("v3")
