"""Issue 16 item 7: domains beyond `default` (a reseller each), domain-scoped tokens and domain role grants,
a domain's admin confined to its own domain, and a disabled domain ending its users' tokens. Each call
answered 404 or 403 before (only `default` existed)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.clouds import ApiClient

V3 = "/identity/v3"
TOKENS = f"{V3}/auth/tokens"


async def _login(api: ApiClient, user: str, domain_id: str, scope: dict[str, Any] | None) -> Any:
    body: dict[str, Any] = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": domain_id}, "password": user}}}}}
    if scope:
        body["auth"]["scope"] = scope
    return await api.http.post(TOKENS, json=body)


async def _role(api: ApiClient, name: str) -> str:
    return str((await api.get(f"{V3}/roles?name={name}")).json()["roles"][0]["id"])


def _unique(name: str) -> str:
    # unique names: the integration tier runs these bodies on MariaDB/PostgreSQL databases shared by a session
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def _reseller(api: ApiClient, ra: str = "ra") -> tuple[str, str, str]:
    """A domain `acme-…` with its admin `ra` (admin role on the domain); returns (domain, ra's id, ra's token)."""
    name = _unique("acme")
    resp = await api.post(f"{V3}/domains", json={"domain": {"name": name, "description": "a reseller"}})
    assert resp.status_code == 201, resp.text
    domain = resp.json()["domain"]
    assert domain["enabled"] is True and domain["name"] == name
    resp = await api.post(f"{V3}/users", json={"user": {"name": ra, "password": ra, "domain_id": domain["id"]}})
    assert resp.status_code == 201, resp.text
    ra_id = resp.json()["user"]["id"]
    admin_role = await _role(api, "admin")
    grant = f"{V3}/domains/{domain['id']}/users/{ra_id}/roles/{admin_role}"
    assert (await api.put(grant)).status_code == 204
    assert (await api.request("HEAD", grant)).status_code == 204
    listed = (await api.get(f"{V3}/domains/{domain['id']}/users/{ra_id}/roles")).json()["roles"]
    assert [r["name"] for r in listed] == ["admin"]
    login = await _login(api, ra, domain["id"], {"domain": {"id": domain["id"]}})
    assert login.status_code == 201, login.text
    assert login.json()["token"]["domain"]["id"] == domain["id"]
    return domain["id"], ra_id, login.headers["x-subject-token"]


async def test_domain_admin_manages_only_its_own_domain(api: ApiClient) -> None:
    domain_id, _, token = await _reseller(api)
    hdr = {"X-Auth-Token": token}
    made = await api.http.post(f"{V3}/users", headers=hdr, json={"user": {"name": "cust", "password": "cust"}})
    proj_name = _unique("cust-proj")
    assert made.status_code == 201, made.text
    assert made.json()["user"]["domain_id"] == domain_id
    proj = await api.http.post(f"{V3}/projects", headers=hdr, json={"project": {"name": proj_name}})
    assert proj.status_code == 201, proj.text
    assert proj.json()["project"]["domain_id"] == domain_id
    # the same names are free in another domain
    assert (await api.post(f"{V3}/projects", json={"project": {"name": proj_name}})).status_code == 201
    users = (await api.http.get(f"{V3}/users", headers=hdr)).json()["users"]
    assert {u["name"] for u in users} == {"ra", "cust"}
    projects = (await api.http.get(f"{V3}/projects", headers=hdr)).json()["projects"]
    assert [p["name"] for p in projects] == [proj_name]
    domains = (await api.http.get(f"{V3}/domains", headers=hdr)).json()["domains"]
    assert [d["id"] for d in domains] == [domain_id]
    demo = (await api.get(f"{V3}/users?name=demo")).json()["users"][0]["id"]
    demo_project = (await api.get(f"{V3}/projects?name=demo")).json()["projects"][0]["id"]
    assert (await api.http.get(f"{V3}/users/{demo}", headers=hdr)).status_code == 403
    assert (await api.http.patch(f"{V3}/users/{demo}", headers=hdr,
                                 json={"user": {"enabled": False}})).status_code == 403
    assert (await api.http.delete(f"{V3}/projects/{demo_project}", headers=hdr)).status_code == 403
    other = await api.http.post(f"{V3}/users", headers=hdr,
                                json={"user": {"name": "x", "password": "x", "domain_id": "default"}})
    assert other.status_code == 403
    assert (await api.http.post(f"{V3}/domains", headers=hdr, json={"domain": {"name": "z"}})).status_code == 403
    assert (await api.http.get(f"{V3}/domains/default", headers=hdr)).status_code == 403
    # a domain-scoped token is for identity only
    assert (await api.http.get("/compute/v2.1/servers", headers=hdr)).status_code == 403
    # the reseller's admin grants its customer a role on its project; the customer logs in there
    member = await _role(api, "member")
    cust, cust_proj = made.json()["user"]["id"], proj.json()["project"]["id"]
    resp = await api.http.put(f"{V3}/projects/{cust_proj}/users/{cust}/roles/{member}", headers=hdr)
    assert resp.status_code == 204, resp.text
    login = await _login(api, "cust", domain_id, {"project": {"name": proj_name, "domain": {"id": domain_id}}})
    assert login.status_code == 201, login.text
    assert (await api.http.put(f"{V3}/projects/{demo_project}/users/{cust}/roles/{member}",
                               headers=hdr)).status_code == 403
    assert (await api.http.put(f"{V3}/projects/{cust_proj}/users/{demo}/roles/{member}",
                               headers=hdr)).status_code == 403
    assert (await api.http.put(f"{V3}/domains/{domain_id}/users/{demo}/roles/{member}",
                               headers=hdr)).status_code == 403
    # what stays the cloud admin's
    for method, path, body in (("POST", f"{V3}/roles", {"role": {"name": "r"}}), ("GET", f"{V3}/role_assignments",
                               None), ("GET", f"{V3}/services", None), ("PATCH", f"{V3}/domains/{domain_id}",
                               {"domain": {"enabled": False}}), ("GET", f"{V3}/domains/default/users/{demo}/roles",
                               None)):
        resp = await api.http.request(method, path, headers=hdr, json=body)
        assert resp.status_code == 403, (method, path, resp.text)


async def test_disabling_a_domain_ends_its_tokens_and_delete_needs_it_disabled(api: ApiClient) -> None:
    domain_id, ra, token = await _reseller(api, "rb")
    hdr = {"X-Auth-Token": token}
    assert (await api.http.get(f"{V3}/users", headers=hdr)).status_code == 200
    refused = await api.delete(f"{V3}/domains/{domain_id}")
    assert refused.status_code == 403
    assert "disable it first" in refused.json()["error"]["message"]
    resp = await api.patch(f"{V3}/domains/{domain_id}", json={"domain": {"enabled": False}})
    assert resp.status_code == 200 and resp.json()["domain"]["enabled"] is False
    assert (await api.http.get(f"{V3}/users", headers=hdr)).status_code == 401
    assert (await _login(api, "rb", domain_id, None)).status_code == 401
    assert (await api.delete(f"{V3}/domains/{domain_id}")).status_code == 204
    assert (await api.get(f"{V3}/domains/{domain_id}")).status_code == 404
    assert (await api.get(f"{V3}/users/{ra}")).status_code == 404
    assert (await api.delete(f"{V3}/domains/default")).status_code == 403


async def test_domain_bad_input(api: ApiClient) -> None:
    assert (await api.post(f"{V3}/domains", json={"domain": {"name": "Default"}})).status_code == 409
    resp = await api.post(f"{V3}/domains", json={"domain": {"name": 5}})
    assert resp.status_code == 400 and "name" in resp.json()["error"]["message"]
    assert (await api.patch(f"{V3}/domains/nope", json={"domain": {"name": "n"}})).status_code == 404
    assert (await api.post(f"{V3}/users", json={"user": {"name": "u", "domain_id": "nope"}})).status_code == 404
    assert (await api.get(f"{V3}/domains", as_user="demo")).status_code == 403
    assert (await api.post(f"{V3}/domains", as_user="demo", json={"domain": {"name": "m"}})).status_code == 403
