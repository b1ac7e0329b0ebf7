"""Issue 16 item 7: catalog administration (services, endpoints, regions) carried by new tokens, groups
with role grants on projects, project tags, and system grants in /role_assignments. Each call answered
404/405 (or an empty list, for role_assignments) on the previous commit."""

from __future__ import annotations

import uuid
from typing import Any

from tests.clouds import ApiClient

V3 = "/identity/v3"
TOKENS = f"{V3}/auth/tokens"


async def _login(api: ApiClient, user: str, project: str) -> Any:
    return await api.http.post(TOKENS, json={"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": user}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})


async def _id(api: ApiClient, kind: str, name: str) -> str:
    return str((await api.get(f"{V3}/{kind}s?name={name}")).json()[f"{kind}s"][0]["id"])


async def test_catalog_changes_reach_new_tokens(api: ApiClient) -> None:
    resp = await api.post(f"{V3}/regions", json={"region": {"id": "RegionTwo", "description": "dc2"}})
    assert resp.status_code == 201, resp.text
    assert resp.json()["region"]["id"] == "RegionTwo"
    resp = await api.post(f"{V3}/services", json={"service": {"type": "object-store", "name": "swift"}})
    assert resp.status_code == 201, resp.text
    svc = resp.json()["service"]["id"]
    body = {"endpoint": {"service_id": svc, "interface": "public", "region_id": "RegionTwo",
                         "url": "https://objects.example.net/v1"}}
    resp = await api.post(f"{V3}/endpoints", json=body)
    assert resp.status_code == 201, resp.text
    ep = resp.json()["endpoint"]
    assert ep["region"] == "RegionTwo" and ep["enabled"] is True

    def swift(catalog: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [s for s in catalog if s["type"] == "object-store"]

    login = await _login(api, "demo", "demo")
    (entry,) = swift(login.json()["token"]["catalog"])
    assert entry["endpoints"][0]["url"] == "https://objects.example.net/v1"
    listed = (await api.get(f"{V3}/endpoints?interface=public&service_id={svc}")).json()["endpoints"]
    assert [e["id"] for e in listed] == [ep["id"]]
    assert (await api.get(f"{V3}/services?type=object-store")).json()["services"][0]["name"] == "swift"
    resp = await api.patch(f"{V3}/endpoints/{ep['id']}", json={"endpoint": {"url": "https://o2.example.net/v1"}})
    assert resp.status_code == 200 and resp.json()["endpoint"]["url"] == "https://o2.example.net/v1"
    catalog = (await api.get(f"{V3}/auth/catalog")).json()["catalog"]
    assert swift(catalog)[0]["endpoints"][0]["url"] == "https://o2.example.net/v1"
    assert (await api.patch(f"{V3}/services/{svc}", json={"service": {"enabled": False}})).status_code == 200
    assert not swift((await _login(api, "demo", "demo")).json()["token"]["catalog"])
    assert (await api.delete(f"{V3}/services/{svc}")).status_code == 204
    assert (await api.get(f"{V3}/endpoints/{ep['id']}")).status_code == 404
    assert (await api.delete(f"{V3}/regions/RegionTwo")).status_code == 204


async def test_catalog_bad_input_and_members(api: ApiClient) -> None:
    bad = [({"service_id": "keystone", "interface": "sideways", "url": "u"}, "interface"),
           ({"service_id": "keystone", "interface": "public", "url": "u", "region_id": "Nowhere"}, "region_id"),
           ({"service_id": "nope", "interface": "public", "url": "u"}, "service_id"),
           ({"service_id": "keystone", "interface": "public"}, "url")]
    for body, field in bad:
        resp = await api.post(f"{V3}/endpoints", json={"endpoint": body})
        assert resp.status_code == 400, (body, resp.text)
        assert field in resp.json()["error"]["message"]
    assert (await api.post(f"{V3}/services", json={"service": {"name": "x"}})).status_code == 400
    assert (await api.post(f"{V3}/regions", json={"region": {"id": "RegionOne"}})).status_code == 409
    assert (await api.get(f"{V3}/services/nope")).status_code == 404
    for path, body in (("services", {"service": {"type": "t"}}), ("regions", {"region": {}})):
        assert (await api.post(f"{V3}/{path}", as_user="demo", json=body)).status_code == 403


async def test_group_grants_on_projects_and_group_lifecycle(api: ApiClient) -> None:
    # unique names: the integration tier runs this body on databases shared by a session
    user_name, group_name = f"gus-{uuid.uuid4().hex[:6]}", f"ops-{uuid.uuid4().hex[:6]}"
    resp = await api.post(f"{V3}/users", json={"user": {"name": user_name, "password": user_name}})
    gus = resp.json()["user"]["id"]
    group = (await api.post(f"{V3}/groups", json={"group": {"name": group_name}})).json()["group"]["id"]
    assert (await api.put(f"{V3}/groups/{group}/users/{gus}")).status_code == 204
    demo_project, member = await _id(api, "project", "demo"), await _id(api, "role", "member")
    assert (await _login(api, user_name, "demo")).status_code == 401
    grant = f"{V3}/projects/{demo_project}/groups/{group}/roles/{member}"
    assert (await api.put(grant)).status_code == 204
    assert (await api.request("HEAD", grant)).status_code == 204
    roles = (await api.get(f"{V3}/projects/{demo_project}/groups/{group}/roles")).json()["roles"]
    assert [r["name"] for r in roles] == ["member"]
    login = await _login(api, user_name, "demo")
    assert login.status_code == 201, login.text
    token = login.headers["x-subject-token"]
    assert (await api.http.get("/compute/v2.1/servers", headers={"X-Auth-Token": token})).status_code == 200
    assert (await api.get(f"{V3}/groups/{group}")).json()["group"]["name"] == group_name
    assert [x["id"] for x in (await api.get(f"{V3}/groups?name={group_name}")).json()["groups"]] == [group]
    assert (await api.get(f"{V3}/groups?domain_id=elsewhere")).json()["groups"] == []
    assert (await api.post(f"{V3}/groups", json={"group": {"name": "g", "domain_id": "nope"}})).status_code == 404
    resp = await api.patch(f"{V3}/groups/{group}", json={"group": {"description": "operators"}})
    assert resp.json()["group"]["description"] == "operators"
    assert [u["name"] for u in (await api.get(f"{V3}/groups/{group}/users")).json()["users"]] == [user_name]
    assert [x["id"] for x in (await api.get(f"{V3}/users/{gus}/groups")).json()["groups"]] == [group]
    found = (await api.get(f"{V3}/role_assignments?group.id={group}")).json()["role_assignments"]
    assert found[0]["group"]["id"] == group and found[0]["scope"]["project"]["id"] == demo_project
    effective = (await api.get(f"{V3}/role_assignments?user.id={gus}&effective")).json()["role_assignments"]
    assert any(a["user"]["id"] == gus and "membership" in a["links"] for a in effective)
    implied = [a for a in effective if "prior_role" in a["links"]]
    assert implied and implied[0]["links"]["prior_role"].endswith(f"/roles/{member}")
    assert implied[0]["links"]["assignment"].endswith(f"/groups/{group}/roles/{member}")
    assert (await api.delete(f"{V3}/groups/{group}")).status_code == 204
    assert (await api.http.get("/compute/v2.1/servers", headers={"X-Auth-Token": token})).status_code == 401
    assert (await _login(api, user_name, "demo")).status_code == 401
    assert (await api.get(f"{V3}/groups/{group}")).status_code == 404


async def test_project_tags(api: ApiClient) -> None:
    pid = await _id(api, "project", "demo")
    tags = f"{V3}/projects/{pid}/tags"
    assert (await api.get(tags)).json()["tags"] == []
    assert (await api.put(f"{tags}/web")).status_code == 201
    assert (await api.get(f"{tags}/web")).status_code == 204
    assert (await api.get(f"{tags}/db")).status_code == 404
    resp = await api.put(tags, json={"tags": ["b", "a"]})
    assert resp.status_code == 200 and resp.json()["tags"] == ["a", "b"]
    assert (await api.get(f"{V3}/projects/{pid}")).json()["project"]["tags"] == ["a", "b"]
    assert [p["name"] for p in (await api.get(f"{V3}/projects?tags=a,b")).json()["projects"]] == ["demo"]
    assert (await api.get(f"{V3}/projects?tags=a,zz")).json()["projects"] == []
    assert "demo" not in {p["name"] for p in (await api.get(f"{V3}/projects?not-tags-any=b")).json()["projects"]}
    resp = await api.patch(f"{V3}/projects/{pid}", json={"project": {"tags": ["gold"]}})
    assert resp.status_code == 200 and resp.json()["project"]["tags"] == ["gold"]
    assert (await api.get(tags, as_user="demo")).json()["tags"] == ["gold"]
    assert (await api.put(f"{tags}/x", as_user="demo")).status_code == 403
    assert (await api.delete(f"{tags}/gold")).status_code == 204
    assert (await api.delete(f"{tags}/gold")).status_code == 404
    assert (await api.put(f"{tags}/x")).status_code == 201
    assert (await api.delete(tags)).status_code == 204
    assert (await api.get(tags)).json()["tags"] == []
    for body in ({"tags": ["a/b"]}, {"tags": "a"}, {"tags": ["t"] * 81}, {"tags": ["x" * 256]}):
        resp = await api.put(tags, json=body)
        assert resp.status_code == 400 and "tags" in resp.json()["error"]["message"]
    assert (await api.put(f"{V3}/projects/nope/tags/x")).status_code == 404


async def test_role_assignments_lists_system_grants(api: ApiClient) -> None:
    demo, reader = await _id(api, "user", "demo"), await _id(api, "role", "reader")
    assert (await api.put(f"{V3}/system/users/{demo}/roles/{reader}")).status_code == 204
    resp = await api.get(f"{V3}/role_assignments?scope.system=all&include_names")
    (found,) = [a for a in resp.json()["role_assignments"] if a["user"]["id"] == demo]
    assert found["scope"] == {"system": {"all": True}}
    assert found["role"] == {"id": reader, "name": "reader"} and found["user"]["name"] == "demo"
    assert found["links"]["assignment"].endswith(f"/system/users/{demo}/roles/{reader}")
    plain = (await api.get(f"{V3}/role_assignments?user.id={demo}")).json()["role_assignments"]
    assert {"project", "system"} <= {next(iter(a["scope"])) for a in plain}
