"""Issue 14 item 10 and deliverable 3: every route of the app has a policy rule, and each answers admin,
member, reader, another project's member, a domain's admin and no token as the rule says; a reader only
reads. The routes are read from the app's own route table, so a route added anywhere is walked (or fails
for want of a rule)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from canopy.api.app import CloudApp
from canopy.api.http import credentials
from canopy.auth.policy import Policy
from canopy.context import RequestContext
from tests.clouds import ApiClient

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Calls a reader makes on its own behalf (its token, its application credentials), not on its project.
# A new host's enrollment carries its own credential (a single-use enrollment token), not a Keystone token.
SELF_SERVICE = {"identity:issue_token", "identity:revoke_token", "identity:create_app_cred",
                "identity:delete_app_cred", "compute:canopy-enroll:create"}


def app_routes(app: CloudApp) -> list[tuple[str, str, str, str]]:
    """(route name, method, prefix, path) for every route of every service, HEAD folded into GET."""
    out = []
    for prefix, service in app.prefixes.items():
        for route in service.app.routes:
            methods = set(route.methods or ()) - ({"HEAD"} if "GET" in (route.methods or ()) else set())
            for method in sorted(methods):
                out.append((route.name, method, prefix, route.path))
    return out


class Persona:
    def __init__(self, name: str, user: str | None, project: str | None, ctx: RequestContext | None,
                 token: str | None = None) -> None:
        self.name, self.user, self.project, self.ctx, self.token = name, user, project, ctx, token


async def _user(api: ApiClient, name: str, project_id: str, role: str) -> str:
    resp = await api.post("/identity/v3/users", json={"user": {"name": name, "password": name}})
    uid = resp.json()["user"]["id"]
    rid = (await api.get(f"/identity/v3/roles?name={role}")).json()["roles"][0]["id"]
    assert (await api.put(f"/identity/v3/projects/{project_id}/users/{uid}/roles/{rid}")).status_code == 204
    return uid


async def _personas(api: ApiClient) -> tuple[list[Persona], dict[str, str]]:
    demo = (await api.get("/identity/v3/projects?name=demo")).json()["projects"][0]["id"]
    other = (await api.post("/identity/v3/projects", json={"project": {"name": "other"}})).json()["project"]["id"]
    demo_user = (await api.get("/identity/v3/users?name=demo")).json()["users"][0]["id"]
    await _user(api, "rita", demo, "reader")
    await _user(api, "otto", other, "member")
    personas = []
    for name, user, project in (("member", "demo", "demo"), ("reader", "rita", "demo"),
                                ("other", "otto", "other"), ("admin", "admin", "admin")):
        token = await api.token(user, project)
        data = api.app.state.cloud.tokens.validate(token)
        ctx = RequestContext(user_id=data.user_id, project_id=data.project_id, roles=data.roles)
        personas.append(Persona(name, user, project, ctx))
    personas.insert(0, Persona("none", None, None, None))
    personas.append(await _domain_admin(api))
    return personas, {"project_id": demo, "user_id": demo_user, "tenant_id": demo}


async def _domain_admin(api: ApiClient) -> Persona:
    """A reseller's admin: the admin role on its own domain, with a domain-scoped token."""
    domain = (await api.post("/identity/v3/domains", json={"domain": {"name": "resell"}})).json()["domain"]["id"]
    resp = await api.post("/identity/v3/users", json={"user": {"name": "dora", "password": "dora",
                                                               "domain_id": domain}})
    uid = resp.json()["user"]["id"]
    rid = (await api.get("/identity/v3/roles?name=admin")).json()["roles"][0]["id"]
    assert (await api.put(f"/identity/v3/domains/{domain}/users/{uid}/roles/{rid}")).status_code == 204
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "dora", "domain": {"id": domain}, "password": "dora"}}}, "scope": {"domain": {"id": domain}}}}
    login = await api.http.post("/identity/v3/auth/tokens", json=body)
    assert login.status_code == 201, login.text
    token = login.headers["x-subject-token"]
    data = api.app.state.cloud.tokens.validate(token)
    ctx = RequestContext(user_id=data.user_id, roles=data.roles, domain_id=data.domain_id)
    return Persona("domain-admin", "dora", None, ctx, token)


def _path(prefix: str, path: str, method: str, real: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The path with parameters filled: real ids for reads, made-up ones for writes (nothing is destroyed)."""
    params: dict[str, str] = {}

    def fill(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        value = real.get(name) if method == "GET" else None
        params[name] = value or f"walk-{name}-0000"
        return params[name]

    return prefix + re.sub(r"\{([^}]+)\}", fill, path), params


def test_every_route_has_a_rule(api: ApiClient) -> None:
    policy: Policy = api.app.state.policy
    names = [name for name, *_ in app_routes(api.app)]
    assert len(names) > 100
    assert policy.missing_rules(names) == [], "add these to canopy/auth/policy_defaults.py"


async def test_each_route_answers_each_persona_as_its_rule_says(api: ApiClient) -> None:
    api.app.state.ratelimiter = None  # a walk of every route from one address: rate limits have their own tests
    personas, real = await _personas(api)
    policy: Policy = api.app.state.policy
    problems: list[str] = []
    for persona in personas:
        for name, method, prefix, path in app_routes(api.app):
            url, params = _path(prefix, path, method, real)
            token = persona.token or (await api.token(persona.user, persona.project) if persona.user else None)
            headers = {"X-Auth-Token": token} if token else {}
            body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
            resp = await api.http.request(method, url, headers=headers, json=body)
            got = resp.status_code
            public = api.app.prefixes[prefix].is_public(method, url[len(prefix):] or "/")
            if persona.ctx is None:
                want_ok = public
                allowed = public
            else:
                allowed = policy.check(name, credentials(persona.ctx), params)
                want_ok = allowed
            where = f"{persona.name} {method} {url} ({name}) -> {got}"
            if got >= 500:
                problems.append(f"5xx: {where}")
            elif persona.ctx is None and not public and got != 401:
                problems.append(f"want 401: {where}")
            elif persona.ctx is not None and not want_ok and got != 403:
                problems.append(f"want 403: {where}")
            elif want_ok and got in (401, 403) and not (persona.name != "admin" and got == 403):
                problems.append(f"refused: {where}")
            if persona.name == "reader" and method in MUTATING and name not in SELF_SERVICE and allowed:
                problems.append(f"a reader may write: {where}")
            if persona.name in ("member", "other", "domain-admin") and policy.text.get(name) == "rule:admin" \
                    and allowed:
                problems.append(f"a member passes an admin rule: {where}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("persona", ["admin", "member"])
async def test_admin_routes_are_403_to_members_and_200_to_admins(api: ApiClient, persona: str) -> None:
    user = "admin" if persona == "admin" else "demo"
    for path in ("/compute/v2.1/os-hypervisors", "/compute/v2.1/os-aggregates", "/identity/v3/users",
                 "/network/v2.0/segments"):
        resp = await api.get(path, as_user=user)
        assert resp.status_code == (200 if persona == "admin" else 403), (path, resp.text)
