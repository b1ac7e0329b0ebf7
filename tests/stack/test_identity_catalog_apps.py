"""Issue 14 deliverable 4 (application credentials, passwords) and issue 16 item 7 (catalog, groups,
system grants, /auth/*): each call answered 404 on main."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select, update

from canopy.api.identity.passwords import scrypt_hash
from canopy.db import tables_global as g
from canopy.runtime import Cloud
from tests.clouds import ApiClient

TOKENS = "/identity/v3/auth/tokens"


def app_cred_auth(cred_id: str, secret: str) -> dict[str, object]:
    return {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": cred_id, "secret": secret}}}}


async def test_application_credential_logs_in_and_ends_with_its_deletion(api: ApiClient) -> None:
    demo = (await api.get("/identity/v3/users?name=demo")).json()["users"][0]["id"]
    resp = await api.post(f"/identity/v3/users/{demo}/application_credentials", as_user="demo",
                          json={"application_credential": {"name": "ci", "roles": [{"name": "reader"}]}})
    assert resp.status_code == 201, resp.text
    cred = resp.json()["application_credential"]
    login = await api.http.post(TOKENS, json=app_cred_auth(cred["id"], cred["secret"]))
    assert login.status_code == 201, login.text
    assert [r["name"] for r in login.json()["token"]["roles"]] == ["reader"]
    token = login.headers["x-subject-token"]
    assert (await api.http.get("/compute/v2.1/servers", headers={"X-Auth-Token": token})).status_code == 200
    # reader only: the credential cannot write
    resp = await api.http.post("/network/v2.0/networks", headers={"X-Auth-Token": token},
                               json={"network": {"name": "x"}})
    assert resp.status_code == 403
    assert (await api.http.post(TOKENS, json=app_cred_auth(cred["id"], "wrong"))).status_code == 401
    listed = await api.get(f"/identity/v3/users/{demo}/application_credentials", as_user="demo")
    assert "secret" not in listed.json()["application_credentials"][0]
    deleted = await api.delete(f"/identity/v3/users/{demo}/application_credentials/{cred['id']}", as_user="demo")
    assert deleted.status_code == 204
    assert (await api.http.get("/compute/v2.1/servers", headers={"X-Auth-Token": token})).status_code == 401


async def test_failed_logins_are_throttled_with_retry_after(api: ApiClient) -> None:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"id": "default"}, "password": "nope"}}}}}
    limit = api.app.state.cloud.settings.auth.login_failures_per_user
    for _ in range(limit):
        assert (await api.http.post(TOKENS, json=body)).status_code == 401
    resp = await api.http.post(TOKENS, json=body)
    assert resp.status_code == 429
    assert int(resp.headers["retry-after"]) > 0


async def test_old_scrypt_hash_verifies_and_is_rehashed(api: ApiClient, cloud: Cloud) -> None:
    def set_scrypt(conn: object) -> None:
        conn.execute(update(g.users).where(g.users.c.name == "demo").values(  # type: ignore[attr-defined]
            password_hash=scrypt_hash("demo")))

    await cloud.dbs.global_db.write(set_scrypt)
    await api.token("demo")
    stored = await cloud.dbs.global_db.read(
        lambda conn: conn.execute(select(g.users.c.password_hash).where(g.users.c.name == "demo")).scalar())
    assert stored.startswith("$argon2id$")


async def test_logins_do_not_block_the_event_loop(api: ApiClient) -> None:
    """While wrong passwords are hashed, a GET is answered in far less than the hashes take together."""
    token = await api.token("demo")
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "nope"}}}}}
    api.app.state.cloud.settings.auth.login_failures_per_user = 1000
    api.app.state.cloud.settings.auth.login_failures_per_source = 1000
    logins = [asyncio.create_task(api.http.post(TOKENS, json=body)) for _ in range(8)]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    resp = await api.http.get("/identity/v3/auth/catalog", headers={"X-Auth-Token": token})
    get_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    statuses = [r.status_code for r in await asyncio.gather(*logins)]
    all_s = get_s + (time.perf_counter() - t1)
    assert resp.status_code == 200
    assert set(statuses) <= {401, 429}
    assert get_s < all_s  # on the loop, the GET would wait for all eight hashes


async def test_catalog_groups_system_and_auth_scopes(api: ApiClient) -> None:
    for path, key in (("/identity/v3/services", "services"), ("/identity/v3/endpoints", "endpoints"),
                      ("/identity/v3/regions", "regions")):
        resp = await api.get(path)
        assert resp.status_code == 200, path
        assert resp.json()[key], path
        assert (await api.get(path, as_user="demo")).status_code == 403
    endpoints = (await api.get("/identity/v3/endpoints")).json()["endpoints"]
    assert all(e["url"].startswith("http") for e in endpoints)
    catalog = (await api.get("/identity/v3/auth/catalog", as_user="demo")).json()["catalog"]
    assert {c["type"] for c in catalog} == {"identity", "compute", "network", "image"}
    projects = (await api.get("/identity/v3/auth/projects", as_user="demo")).json()["projects"]
    assert [p["name"] for p in projects] == ["demo"]
    group = (await api.post("/identity/v3/groups", json={"group": {"name": "ops"}})).json()["group"]
    demo = (await api.get("/identity/v3/users?name=demo")).json()["users"][0]["id"]
    assert (await api.put(f"/identity/v3/groups/{group['id']}/users/{demo}")).status_code == 204
    assert [x["name"] for x in (await api.get("/identity/v3/groups")).json()["groups"]] == ["ops"]
    reader = (await api.get("/identity/v3/roles?name=reader")).json()["roles"][0]["id"]
    assert (await api.put(f"/identity/v3/system/users/{demo}/roles/{reader}")).status_code == 204
    system = (await api.get("/identity/v3/auth/system", as_user="demo")).json()["system"]
    assert system == [{"all": True}]
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"id": "default"}, "password": "demo"}}}, "scope": {"system": {"all": True}}}}
    resp = await api.http.post(TOKENS, json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["token"]["system"] == {"all": True}
    # a system reader reads but does not write
    token = resp.headers["x-subject-token"]
    assert (await api.http.get("/compute/v2.1/servers", headers={"X-Auth-Token": token})).status_code == 200
    resp = await api.http.post("/network/v2.0/networks", headers={"X-Auth-Token": token},
                               json={"network": {"name": "x"}})
    assert resp.status_code == 403
