"""The workload driver: several users in several projects drive the public HTTP API with the request shapes
of the real clients (token, then `POST /servers`, `POST /servers/{id}/action`, `DELETE`), and one admin
poller follows every server with `GET /servers/detail?all_tenants=1&changes-since=…`.

Each server follows a plan drawn when it is booted: [stop, start] or [reboot] or [resize, confirm], then
delete (or nothing, for profiles that keep their servers); a step is sent once the server has settled in
the state the previous step leads to.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from canopy.sim.profile import Profile

MICROVERSION = {"OpenStack-API-Version": "compute 2.87", "X-OpenStack-Nova-API-Version": "2.87"}
SETTLED = {"ACTIVE", "SHUTOFF", "VERIFY_RESIZE", "ERROR", "DELETED"}
# each step: the request, and the status the server settles in after it
STEPS: dict[str, tuple[dict[str, Any] | None, str]] = {
    "stop": ({"os-stop": None}, "SHUTOFF"), "start": ({"os-start": None}, "ACTIVE"),
    "reboot": ({"reboot": {"type": "SOFT"}}, "ACTIVE"), "resize": ({"resize": {"flavorRef": "2"}}, "VERIFY_RESIZE"),
    "confirm": ({"confirmResize": None}, "ACTIVE"), "delete": (None, "DELETED"),
}
PLANS = {"stop_start": ["stop", "start"], "reboot": ["reboot"], "resize": ["resize", "confirm"]}


@dataclass
class Tracked:
    """One server as the driver follows it."""

    id: str
    user: int
    plan: list[str]
    status: str = "BUILD"
    posted_at: float = 0.0
    active_at: float = 0.0
    due_at: float = 0.0
    waiting_for: str = "ACTIVE"
    busy: bool = False
    flavor: str = ""


@dataclass
class Stats:
    """What the driver saw: per-route latencies, errors by kind, and a time series."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    boots_requested: int = 0
    create_to_active_client: list[float] = field(default_factory=list)
    series: list[dict[str, float]] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)


class Driver:
    """Drives one profile against one or more api processes."""

    def __init__(self, urls: list[str], profile: Profile, *, seed: int = 1) -> None:
        self.urls, self.profile = urls, profile
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.servers: dict[str, Tracked] = {}
        self.users: list[dict[str, str]] = []  # token, project_id, name
        self.admin_token = ""
        self.image_id = ""
        self.groups: list[str] = []
        self._clients = [httpx.AsyncClient(base_url=u, timeout=60, limits=httpx.Limits(max_connections=200))
                         for u in urls]
        self._rr = itertools.cycle(range(len(urls)))
        self._inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self._pending_members: dict[str, tuple[int, float]] = {}  # reservation id -> (user, posted at)

    # -- set-up ------------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Admin token; the simulator's projects and users (created through the Identity API); their tokens."""
        self.admin_token = await self._token("admin", "admin", "admin")
        h = {"X-Auth-Token": self.admin_token}
        roles = (await self._client().get("/identity/v3/roles", headers=h)).json()["roles"]
        member = next(r["id"] for r in roles if r["name"] == "member")
        suffix = f"{int(time.time() * 1000) % 10**8}"
        for n in range(self.profile.projects):
            name = f"sim-{suffix}-{n}"
            project = await self._post("/identity/v3/projects", {"project": {"name": name, "domain_id": "default"}}, h)
            user = await self._post("/identity/v3/users", {"user": {"name": name, "password": name,
                                                                   "default_project_id": project["project"]["id"],
                                                                   "domain_id": "default"}}, h)
            pid, uid = project["project"]["id"], user["user"]["id"]
            r = await self._client().put(f"/identity/v3/projects/{pid}/users/{uid}/roles/{member}", headers=h)
            r.raise_for_status()
            self.users.append({"token": await self._token(name, name, name), "project_id": pid, "name": name})
        images = (await self._client().get("/image/v2/images?name=canopy-tiny", headers=h)).json()["images"]
        self.image_id = images[0]["id"]
        if self.profile.server_group > 0:
            for u in self.users:
                body = {"server_group": {"name": f"g-{u['name']}", "policy": "soft-anti-affinity"}}
                g = await self._post("/compute/v2.1/os-server-groups", body, self._h(u))
                self.groups.append(g["server_group"]["id"])

    async def add_subnet(self, cidr: str) -> None:
        """Size the public network for the run: one more subnet on it."""
        h = {"X-Auth-Token": self.admin_token}
        nets = (await self._client().get("/network/v2.0/networks?name=public", headers=h)).json()["networks"]
        await self._post("/network/v2.0/subnets", {"subnet": {
            "network_id": nets[0]["id"], "ip_version": 4, "cidr": cidr, "name": f"sim-{cidr}",
            "enable_dhcp": False}}, h)

    async def _token(self, user: str, password: str, project: str) -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
        r = await self._client().post("/identity/v3/auth/tokens", json=body)
        r.raise_for_status()
        return r.headers["x-subject-token"]

    async def _post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        r = await self._client().post(path, json=body, headers=headers)
        if r.status_code >= 400:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")
        return r.json()

    def _client(self) -> httpx.AsyncClient:
        return self._clients[next(self._rr)]

    def _h(self, user: dict[str, str]) -> dict[str, str]:
        return {"X-Auth-Token": user["token"], **MICROVERSION}

    # -- the run -----------------------------------------------------------------------------------

    async def run(self, duration_s: float) -> None:
        """Offer boots for `duration_s`, then let the servers in flight finish their plans (bounded)."""
        t0 = time.monotonic()
        poller = asyncio.create_task(self._poll_loop())
        stepper = asyncio.create_task(self._step_loop())
        try:
            await self._offer(t0 + duration_s)
            drain_until = time.monotonic() + max(30.0, duration_s / 2)
            while time.monotonic() < drain_until and any(not self._done(s) for s in self.servers.values()):
                await asyncio.sleep(0.2)
        finally:
            self.stopping = True
            for task in (poller, stepper):
                task.cancel()
            await asyncio.gather(poller, stepper, *self._tasks, return_exceptions=True)

    def _done(self, s: Tracked) -> bool:
        return s.status in ("ERROR", "DELETED") or (not s.plan and not s.busy and s.status == s.waiting_for)

    async def _offer(self, until: float) -> None:
        rate = self.profile.rate
        next_at = time.monotonic()
        while (now := time.monotonic()) < until:
            if rate > 0:  # open loop: boots go out on schedule whatever the answers do
                if now < next_at:
                    await asyncio.sleep(min(next_at - now, until - now))
                    continue
                next_at += 1.0 / rate
            elif self._inflight >= self.profile.concurrency:
                await asyncio.sleep(0.005)
                continue
            self._spawn(self._boot())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _boot(self) -> None:
        p, rng = self.profile, self.rng
        n_user = rng.randrange(len(self.users))
        flavor = rng.choices(list(p.flavors), weights=list(p.flavors.values()))[0]
        server: dict[str, Any] = {"name": f"sim-{rng.getrandbits(32):08x}", "flavorRef": flavor,
                                  "imageRef": self.image_id, "networks": "auto"}
        count = rng.choice((2, 3)) if rng.random() < p.multi_create else 1
        if count > 1:
            server.update(min_count=count, max_count=count)
        body: dict[str, Any] = {"server": server}
        if self.groups and rng.random() < p.server_group:
            body["os:scheduler_hints"] = {"group": self.groups[n_user]}
        self._inflight += 1
        posted = time.monotonic()
        try:
            r = await self._request("POST", "/compute/v2.1/servers", "servers:create", self.users[n_user], json=body)
        finally:
            self._inflight -= 1
        if r is None or r.status_code != 202:
            return
        self.stats.boots_requested += count
        sid = r.json()["server"]["id"]
        self.servers.setdefault(sid, Tracked(sid, n_user, self._plan(), posted_at=posted, flavor=flavor))
        if count > 1:  # the other members appear in the poller's lists; they were posted at the same time
            self._pending_members[r.json()["server"].get("reservation_id", sid)] = (n_user, posted)

    def _plan(self) -> list[str]:
        plan: list[str] = []
        for name, chance in self.profile.actions.items():
            if self.rng.random() < chance:
                plan.extend(PLANS[name])
        if self.profile.delete:
            plan.append("delete")
        return plan

    async def _request(self, method: str, path: str, route: str, user: dict[str, str],
                       **kw: Any) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = await self._client().request(method, path, headers=self._h(user), **kw)
        except httpx.HTTPError as exc:
            self.stats.errors[f"{route}:{type(exc).__name__}"] += 1
            return None
        self.stats.latencies[route].append(time.perf_counter() - t0)
        if r.status_code >= 400:
            self.stats.errors[f"{route}:{r.status_code}"] += 1
        return r

    async def _poll_loop(self) -> None:
        """Follow every server's status (admin, all projects, only what changed since the last look)."""
        admin = {"token": self.admin_token}
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        while True:
            started = dt.datetime.now(dt.UTC)
            path = (f"/compute/v2.1/servers/detail?all_tenants=1&limit=1000&changes-since="
                    f"{(since - dt.timedelta(seconds=1)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}")
            while path:
                r = await self._request("GET", path, "servers:list_detail", admin)
                if r is None or r.status_code != 200:
                    break
                body = r.json()
                for srv in body["servers"]:
                    self._seen(srv)
                nxt = [link["href"] for link in body.get("servers_links", []) if link.get("rel") == "next"]
                path = httpx.URL(nxt[0]).raw_path.decode() if nxt else ""
            since = started
            self._record_series()
            await asyncio.sleep(0.2)

    def _seen(self, srv: dict[str, Any]) -> None:
        status = srv["status"]
        s = self.servers.get(srv["id"])
        if s is None:
            owner = next((n for n, u in enumerate(self.users) if u["project_id"] == srv.get("tenant_id")), None)
            if owner is None:
                return  # not one of ours
            s = self.servers[srv["id"]] = Tracked(srv["id"], owner, self._plan(), posted_at=time.monotonic(),
                                                  flavor=str(srv.get("flavor", {}).get("id", "")))
            member = self._pending_members.get(srv.get("OS-EXT-SRV-ATTR:reservation_id", ""))
            if member is not None:
                s.posted_at = member[1]
        if status == s.status:
            return
        s.status = status
        now = time.monotonic()
        if status == "ACTIVE" and not s.active_at:
            s.active_at = now
            self.stats.create_to_active_client.append(now - s.posted_at)
        if status == s.waiting_for and not s.busy:
            # a new server lives its lifetime; a server that settled after a step goes on a moment later
            first = status == "ACTIVE" and s.active_at == now
            s.due_at = now + (self.rng.uniform(*self.profile.lifetime_s) if first else self.rng.uniform(0.2, 1.0))

    async def _step_loop(self) -> None:
        while True:
            now = time.monotonic()
            for s in list(self.servers.values()):
                if s.plan and not s.busy and s.status == s.waiting_for and s.due_at and s.due_at <= now:
                    s.busy = True
                    self._spawn(self._step(s))
            await asyncio.sleep(0.05)

    async def _step(self, s: Tracked) -> None:
        step = s.plan.pop(0)
        body, settles = STEPS[step]
        user = self.users[s.user]
        self.stats.actions[step] += 1
        if step == "resize":  # to another flavor than the one it has (the same one is a 400)
            body = {"resize": {"flavorRef": "3" if s.flavor == "2" else "2"}}
            s.flavor = body["resize"]["flavorRef"]
        if body is None:
            r = await self._request("DELETE", f"/compute/v2.1/servers/{s.id}", "servers:delete", user)
        else:
            r = await self._request("POST", f"/compute/v2.1/servers/{s.id}/action", f"servers:action:{step}",
                                    user, json=body)
        s.waiting_for, s.due_at = settles, 0.0
        if r is not None and r.status_code == 404 and step == "delete":
            s.status = "DELETED"
        s.busy = False

    def _record_series(self) -> None:
        counts = Counter(s.status for s in self.servers.values())
        self.stats.series.append({"t": time.time(), "boots_requested": self.stats.boots_requested,
                                  "active": counts["ACTIVE"], "build": counts["BUILD"], "error": counts["ERROR"],
                                  "deleted": counts["DELETED"], "inflight": self._inflight})

    async def close(self) -> None:
        for c in self._clients:
            await c.aclose()
