"""Identity v3 administration: domains, projects, users, roles and role assignments."""

from __future__ import annotations

from typing import Any

import httpx

from tests.clouds import ApiClient

V3 = "/identity/v3"


def _error(resp: httpx.Response, status: int) -> str:
    """The message of an identity-shaped error with `status`."""
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == status
    assert error["title"]
    return str(error["message"])


async def _id_of(api: ApiClient, kind: str, name: str) -> str:
    resp = await api.get(f"{V3}/{kind}s?name={name}")
    assert resp.status_code == 200, resp.text
    (item,) = resp.json()[f"{kind}s"]
    return str(item["id"])


async def _create(api: ApiClient, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await api.post(f"{V3}/{kind}s", json={kind: body})
    assert resp.status_code == 201, resp.text
    return resp.json()[kind]  # type: ignore[no-any-return]


async def test_domains_list_only_default(api: ApiClient) -> None:
    resp = await api.get(f"{V3}/domains")
    assert resp.status_code == 200
    body = resp.json()
    assert [d["id"] for d in body["domains"]] == ["default"]
    assert body["domains"][0]["name"] == "Default"
    assert set(body["links"]) == {"self", "previous", "next"}
    one = await api.get(f"{V3}/domains/default")
    assert one.json()["domain"]["links"]["self"].endswith("/identity/v3/domains/default")
    assert "nowhere" in _error(await api.get(f"{V3}/domains/nowhere"), 404)
    _error(await api.get(f"{V3}/domains", as_user="demo"), 403)


async def test_project_lifecycle(api: ApiClient) -> None:
    project = await _create(api, "project", {"name": "acme", "description": "ACME Corp"})
    assert project["name"] == "acme"
    assert project["domain_id"] == "default"
    assert project["enabled"] is True
    assert project["links"]["self"].endswith(f"/identity/v3/projects/{project['id']}")
    pid = project["id"]

    listed = (await api.get(f"{V3}/projects?name=acme")).json()
    assert [p["id"] for p in listed["projects"]] == [pid]
    assert listed["links"]["next"] is None
    all_names = {p["name"] for p in (await api.get(f"{V3}/projects")).json()["projects"]}
    assert all_names >= {"admin", "demo", "acme"}

    resp = await api.patch(f"{V3}/projects/{pid}", json={"project": {"description": "new", "enabled": False}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["project"]["description"] == "new"
    assert resp.json()["project"]["enabled"] is False
    assert (await api.get(f"{V3}/projects/{pid}")).json()["project"]["enabled"] is False

    assert (await api.delete(f"{V3}/projects/{pid}")).status_code == 204
    assert pid in _error(await api.get(f"{V3}/projects/{pid}"), 404)
    _error(await api.delete(f"{V3}/projects/{pid}"), 404)
    _error(await api.patch(f"{V3}/projects/{pid}", json={"project": {"description": "x"}}), 404)


async def test_project_duplicates_conflict(api: ApiClient) -> None:
    assert "demo" in _error(await api.post(f"{V3}/projects", json={"project": {"name": "demo"}}), 409)
    other = await _create(api, "project", {"name": "other"})
    _error(await api.patch(f"{V3}/projects/{other['id']}", json={"project": {"name": "demo"}}), 409)
    same = await api.patch(f"{V3}/projects/{other['id']}", json={"project": {"name": "other"}})
    assert same.status_code == 200


async def test_project_bad_bodies_name_the_field(api: ApiClient) -> None:
    assert "'name'" in _error(await api.post(f"{V3}/projects", json={"project": {"description": "x"}}), 400)
    assert "'enabled'" in _error(
        await api.post(f"{V3}/projects", json={"project": {"name": "x", "enabled": "yes"}}), 400)
    assert "'name'" in _error(await api.post(f"{V3}/projects", json={"project": {"name": 7}}), 400)
    assert "project" in _error(await api.post(f"{V3}/projects", json={"name": "x"}), 400)
    _error(await api.post(f"{V3}/projects", content=b"{not json", headers={"Content-Type": "application/json"}),
           400)
    demo = await _id_of(api, "project", "demo")
    assert "'name'" in _error(await api.patch(f"{V3}/projects/{demo}", json={"project": {"name": None}}), 400)
    _error(await api.post(f"{V3}/projects", json={"project": {"name": "x", "domain_id": "elsewhere"}}), 404)


async def test_members_are_refused_admin_calls(api: ApiClient) -> None:
    demo_project = await _id_of(api, "project", "demo")
    admin_project = await _id_of(api, "project", "admin")
    demo_user = await _id_of(api, "user", "demo")
    admin_user = await _id_of(api, "user", "admin")
    for method, path, body in [
        ("POST", f"{V3}/projects", {"project": {"name": "mine"}}),
        ("PATCH", f"{V3}/projects/{demo_project}", {"project": {"description": "x"}}),
        ("DELETE", f"{V3}/projects/{demo_project}", None),
        ("GET", f"{V3}/users", None),
        ("POST", f"{V3}/users", {"user": {"name": "u"}}),
        ("PATCH", f"{V3}/users/{demo_user}", {"user": {"email": "x@example.com"}}),
        ("DELETE", f"{V3}/users/{admin_user}", None),
        ("GET", f"{V3}/roles", None),
        ("POST", f"{V3}/roles", {"role": {"name": "r"}}),
        ("GET", f"{V3}/role_assignments", None),
        ("GET", f"{V3}/users/{admin_user}", None),
        ("GET", f"{V3}/projects/{admin_project}", None),
    ]:
        resp = await api.request(method, path, as_user="demo", json=body)
        _error(resp, 403)
    # What a member may see: its own project and itself.
    mine = (await api.get(f"{V3}/projects", as_user="demo")).json()["projects"]
    assert [p["id"] for p in mine] == [demo_project]
    assert (await api.get(f"{V3}/projects/{demo_project}", as_user="demo")).status_code == 200
    me = await api.get(f"{V3}/users/{demo_user}", as_user="demo")
    assert me.status_code == 200
    assert me.json()["user"]["name"] == "demo"


async def test_user_lifecycle_and_login(api: ApiClient) -> None:
    project = await _create(api, "project", {"name": "carol"})
    user = await _create(api, "user", {"name": "carol", "password": "carol", "default_project_id": project["id"],
                                       "email": "carol@example.com"})
    assert user["default_project_id"] == project["id"]
    assert user["email"] == "carol@example.com"
    assert "password" not in user and "password_hash" not in user
    assert user["links"]["self"].endswith(f"/users/{user['id']}")
    assert [u["id"] for u in (await api.get(f"{V3}/users?name=carol")).json()["users"]] == [user["id"]]
    _error(await api.post(f"{V3}/users", json={"user": {"name": "carol", "password": "x"}}), 409)

    member = await _id_of(api, "role", "member")
    grant = await api.put(f"{V3}/projects/{project['id']}/users/{user['id']}/roles/{member}")
    assert grant.status_code == 204
    token = await api.token("carol")
    check = await api.http.get(f"{V3}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert check.json()["token"]["project"]["id"] == project["id"]
    assert (await api.get(f"{V3}/users/{user['id']}", as_user="carol")).status_code == 200

    resp = await api.patch(f"{V3}/users/{user['id']}", json={"user": {"password": "s3cret", "enabled": True}})
    assert resp.status_code == 200, resp.text
    login = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "carol", "domain": {"id": "default"}, "password": "s3cret"}}}}}
    assert (await api.http.post(f"{V3}/auth/tokens", json=login)).status_code == 201

    assert (await api.delete(f"{V3}/users/{user['id']}")).status_code == 204
    _error(await api.get(f"{V3}/users/{user['id']}"), 404)
    assert (await api.http.post(f"{V3}/auth/tokens", json=login)).status_code == 401


async def test_user_bad_bodies(api: ApiClient) -> None:
    assert "'name'" in _error(await api.post(f"{V3}/users", json={"user": {"password": "x"}}), 400)
    assert "'password'" in _error(await api.post(f"{V3}/users", json={"user": {"name": "u", "password": 5}}), 400)
    assert "nope" in _error(
        await api.post(f"{V3}/users", json={"user": {"name": "u", "default_project_id": "nope"}}), 404)
    _error(await api.patch(f"{V3}/users/nope", json={"user": {"email": "a@b"}}), 404)


async def test_role_lifecycle(api: ApiClient) -> None:
    role = await _create(api, "role", {"name": "auditor"})
    assert role["links"]["self"].endswith(f"/roles/{role['id']}")
    assert [r["id"] for r in (await api.get(f"{V3}/roles?name=auditor")).json()["roles"]] == [role["id"]]
    names = {r["name"] for r in (await api.get(f"{V3}/roles")).json()["roles"]}
    assert names >= {"admin", "member", "reader", "auditor"}
    assert (await api.get(f"{V3}/roles/{role['id']}")).json()["role"]["name"] == "auditor"
    _error(await api.post(f"{V3}/roles", json={"role": {"name": "auditor"}}), 409)
    assert "'name'" in _error(await api.post(f"{V3}/roles", json={"role": {}}), 400)
    assert (await api.delete(f"{V3}/roles/{role['id']}")).status_code == 204
    _error(await api.get(f"{V3}/roles/{role['id']}"), 404)
    _error(await api.delete(f"{V3}/roles/{role['id']}"), 404)


async def test_role_assignments(api: ApiClient) -> None:
    project = await _create(api, "project", {"name": "dave"})
    user = await _create(api, "user", {"name": "dave", "password": "dave"})
    reader = await _id_of(api, "role", "reader")
    member = await _id_of(api, "role", "member")
    path = f"{V3}/projects/{project['id']}/users/{user['id']}/roles"

    head = await api.request("HEAD", f"{path}/{member}")
    assert head.status_code == 404
    assert (await api.put(f"{path}/{member}")).status_code == 204
    assert (await api.put(f"{path}/{member}")).status_code == 204
    assert (await api.request("HEAD", f"{path}/{member}")).status_code == 204
    assert [r["id"] for r in (await api.get(path)).json()["roles"]] == [member]

    resp = await api.get(f"{V3}/role_assignments?user.id={user['id']}&scope.project.id={project['id']}")
    (assignment,) = resp.json()["role_assignments"]
    assert assignment["role"] == {"id": member}
    assert assignment["user"] == {"id": user["id"]}
    assert assignment["scope"] == {"project": {"id": project["id"]}}
    assert assignment["links"]["assignment"].endswith(f"{path}/{member}")
    named = await api.get(f"{V3}/role_assignments?user.id={user['id']}&include_names=true")
    (one,) = named.json()["role_assignments"]
    assert one["role"]["name"] == "member" and one["user"]["name"] == "dave"
    assert one["scope"]["project"]["name"] == "dave"
    effective = await api.get(f"{V3}/role_assignments?user.id={user['id']}&effective")
    assert {a["role"]["id"] for a in effective.json()["role_assignments"]} == {member, reader}
    by_role = await api.get(f"{V3}/role_assignments?role.id={member}")
    assert {a["user"]["id"] for a in by_role.json()["role_assignments"]} >= {user["id"]}

    assert (await api.delete(f"{path}/{member}")).status_code == 204
    _error(await api.delete(f"{path}/{member}"), 404)
    assert (await api.get(path)).json()["roles"] == []
    assert "nope" in _error(await api.put(f"{path}/nope"), 404)
    assert "nope" in _error(await api.put(f"{V3}/projects/nope/users/{user['id']}/roles/{member}"), 404)
    assert "nope" in _error(await api.get(f"{V3}/projects/{project['id']}/users/nope/roles"), 404)


async def test_deleting_a_project_drops_its_assignments(api: ApiClient) -> None:
    project = await _create(api, "project", {"name": "erin"})
    user = await _create(api, "user", {"name": "erin", "password": "erin"})
    member = await _id_of(api, "role", "member")
    assert (await api.put(f"{V3}/projects/{project['id']}/users/{user['id']}/roles/{member}")).status_code == 204
    assert (await api.delete(f"{V3}/projects/{project['id']}")).status_code == 204
    left = await api.get(f"{V3}/role_assignments?user.id={user['id']}")
    assert left.json()["role_assignments"] == []


async def test_user_projects(api: ApiClient) -> None:
    demo_user = await _id_of(api, "user", "demo")
    resp = await api.get(f"{V3}/users/{demo_user}/projects", as_user="demo")
    assert [p["name"] for p in resp.json()["projects"]] == ["demo"]
    admin_user = await _id_of(api, "user", "admin")
    _error(await api.get(f"{V3}/users/{admin_user}/projects", as_user="demo"), 403)
