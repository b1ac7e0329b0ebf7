"""Building blocks for tests that start a cloud in-process (tests/stack, some of tests/integration):
settings, an API client logged in as a seeded user, the all-in-one without an HTTP port, and a
server's request body and its wait. Fixtures built on them live in the tiers' conftest.py."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.agent.net.tables import uplink_ofport
from canopy.config import Settings
from canopy.seed import PUBLIC_NETWORK_ID, TINY_IMAGE_ID
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]  # the repository: the working folder of `canopy` subprocesses
V = {"OpenStack-API-Version": "compute 2.87"}
BACKENDS = ("sqlite", "mariadb", "postgresql")


def server_body(**over: Any) -> dict[str, Any]:
    """A create-server body for the seeded tiny image on the public network; `over` replaces fields."""
    body = {"name": "web-1", "flavorRef": "1", "imageRef": TINY_IMAGE_ID, "networks": [{"uuid": PUBLIC_NETWORK_ID}]}
    body.update(over)
    return {"server": body}


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings on `data_dir` with a fixed token secret."""
    settings = Settings(data_dir=data_dir, **overrides).resolved()
    settings.auth.token_secret = "test-secret"
    return settings


def stack_settings(data_dir: Path, backend_url: str | None = None) -> Settings:
    """The `stack` fixture's settings: hypervisors that answer at once and are big enough for every test."""
    settings = make_settings(data_dir)
    if backend_url:
        settings.database.global_url = settings.database.cell_url = backend_url
    settings.fake.spawn_delay_s = 0.0
    settings.fake.op_delay_s = 0.0
    settings.fake.vcpus = 8
    settings.fake.memory_mb = 16384
    settings.fake.disk_gb = 200
    settings.conductor.stop_timeout_s = 0.5
    return settings


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiClient:
    """An httpx client on the ASGI app that logs in as a seeded user."""

    def __init__(self, app: Any) -> None:
        self.app = app
        from tests.conformance import check

        # Every response is checked against its route's schema (tests/conformance.py).
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://canopy.test",
                                      event_hooks={"response": [check]})
        self._tokens: dict[str, str] = {}

    async def token(self, user: str, project: str | None = None) -> str:
        """A token for `user` scoped to `project` (by default the project named like the user), cached."""
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
        """A request with the user's token."""
        hdrs = {"X-Auth-Token": await self.token(as_user, project), **(headers or {})}
        return await self.http.request(method, path, headers=hdrs, **kwargs)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        """GET as a user."""
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        """POST as a user."""
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> httpx.Response:
        """PUT as a user."""
        return await self.request("PUT", path, **kw)

    async def patch(self, path: str, **kw: Any) -> httpx.Response:
        """PATCH as a user."""
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        """DELETE as a user."""
        return await self.request("DELETE", path, **kw)


@contextlib.asynccontextmanager
async def in_process_cloud(settings: Any, hosts: int) -> AsyncIterator[Any]:
    """An AllInOne on `settings` with `hosts` simulated hypervisors and no HTTP port; `.api` is an
    ApiClient on its app. Stopped when the block ends."""
    from canopy.allinone import AllInOne
    from canopy.api.app import build_app, close_app

    aio = AllInOne(settings, hosts=hosts, serve_http=False)
    await aio.start()
    aio.api = ApiClient(build_app(aio.cloud))  # type: ignore[attr-defined]
    try:
        yield aio
    finally:
        await aio.api.http.aclose()  # type: ignore[attr-defined]
        await close_app(aio.api.app)  # type: ignore[attr-defined]
        await aio.stop()


async def wait_for_server(api: ApiClient, server_id: str, statuses: set[str], *, as_user: str = "admin",
                          timeout: float = 10.0) -> dict[str, Any]:
    """Poll a server until its status is one of `statuses`; fail with its last view otherwise."""
    last: dict[str, Any] = {}

    async def reached() -> dict[str, Any] | None:
        resp = await api.get(f"/compute/v2.1/servers/{server_id}", as_user=as_user)
        if resp.status_code == 404 and "DELETED" in statuses:
            return {"status": "DELETED"}
        assert resp.status_code == 200, resp.text
        last.update(resp.json()["server"])
        return dict(last) if last["status"] in statuses else None

    try:
        return await wait_until(reached, timeout, what=f"server {server_id} reaching {statuses}")
    except AssertionError:
        raise AssertionError(f"server {server_id} never reached {statuses}; last: {last}") from None


async def boot_active(stack: Any, name: str = "vm") -> tuple[str, Any]:
    """Boot a server as demo (the first flavor, the tiny image, networks auto) and wait until it is
    ACTIVE; returns its ID and the fake driver of the host it landed on."""
    api = stack.api
    image = (await api.get("/image/v2/images?name=canopy-tiny")).json()["images"][0]["id"]
    flavor = (await api.get("/compute/v2.1/flavors", headers=V)).json()["flavors"][0]["id"]
    resp = await api.post("/compute/v2.1/servers", headers=V, as_user="demo", json={"server": {
        "name": name, "imageRef": image, "flavorRef": flavor, "networks": "auto"}})
    assert resp.status_code == 202, resp.text
    sid = resp.json()["server"]["id"]
    server = await wait_for_server(api, sid, {"ACTIVE"}, as_user="demo")
    host = server["OS-EXT-SRV-ATTR:host"] if "OS-EXT-SRV-ATTR:host" in server else None
    if host is None:
        host = (await api.get(f"/compute/v2.1/servers/{sid}", headers=V)).json()["server"][
            "OS-EXT-SRV-ATTR:host"]
    return sid, stack.drivers[host]


def project_id(cloud: Any, name: str) -> str:
    """The ID of the seeded project called `name`."""
    from sqlalchemy import select

    from canopy.db import tables_global as g

    with cloud.dbs.global_db.reader() as conn:
        return str(conn.execute(select(g.projects.c.id).where(g.projects.c.name == name)).scalar_one())


# -- the flows of a stack's hosts (its switches are fakes with OpenFlow semantics) ----------------------

N = "/network/v2.0"
UPLINK = uplink_ofport("public")


async def boot_port(stack: Any, name: str, user: str, **extra: Any) -> dict[str, Any]:
    """Boot a server on the public network as `user`, wait until ACTIVE, and return its port's view."""
    body = server_body(name=name)
    body["server"]["networks"] = [{"uuid": PUBLIC_NETWORK_ID}]
    body["server"].update(extra)
    resp = await stack.api.post("/compute/v2.1/servers", json=body, headers=V, as_user=user)
    assert resp.status_code == 202, resp.text
    server = await wait_for_server(stack.api, resp.json()["server"]["id"], {"ACTIVE"}, as_user=user)
    (port,) = (await stack.api.get(f"{N}/ports?device_id={server['id']}")).json()["ports"]
    return port  # type: ignore[no-any-return]


async def arp_responder_on(stack: Any, network_id: str = PUBLIC_NETWORK_ID) -> None:
    """Give a network an ARP responder (its hosts then keep its ports on other hosts as neighbors), as
    `canopy:arp_responder` at creation would; before its first boot, since conductors cache topology."""
    from sqlalchemy import update

    from canopy.db import tables_global as g

    def write(conn: Any) -> None:
        conn.execute(update(g.networks).where(g.networks.c.id == network_id).values(arp_responder=True))

    await stack.cloud.dbs.global_db.write(write)
    stack.conductor.netsync.topology.networks.pop(network_id, None)


def node_of(stack: Any, host: str) -> NetNode:
    """The network node of the agent on `host`."""
    return next(a.net for a in stack.agents if a.host == host)


def switch_of(stack: Any, host: str) -> Any:
    """The fake switch's flow table on `host`."""
    applier = node_of(stack, host).applier
    assert isinstance(applier, FakeApplier)
    return applier.table


def ping(src: dict[str, Any], dst: dict[str, Any], src_ip: str | None = None) -> str:
    """An IPv4 packet from port view `src` to port view `dst`, as an ovs-ofctl flow match."""
    return (f"in_port={src['binding:vif_details']['ofport']},ip,dl_src={src['mac_address']},"
            f"dl_dst={dst['mac_address']},nw_src={src_ip or src['fixed_ips'][0]['ip_address']},"
            f"nw_dst={dst['fixed_ips'][0]['ip_address']}")


async def open_group(api: Any, user: str, name: str = "open") -> dict[str, Any]:
    """A security group letting everything in, by address prefix only: no remote-group rule, so a boot in
    it reaches no other host (issue 18's measure; the default group's same-group rule reaches its peers)."""
    made = await api.post("/network/v2.0/security-groups", as_user=user, json={"security_group": {"name": name}})
    assert made.status_code == 201, made.text
    group: dict[str, Any] = made.json()["security_group"]
    for ethertype, prefix in (("IPv4", "0.0.0.0/0"), ("IPv6", "::/0")):
        rule = await api.post("/network/v2.0/security-group-rules", as_user=user, json={"security_group_rule": {
            "security_group_id": group["id"], "direction": "ingress", "ethertype": ethertype,
            "remote_ip_prefix": prefix}})
        assert rule.status_code == 201, rule.text
    return group


def flows_outside_firewall(node: Any, address: str) -> list[str]:
    """The flows of a host naming `address` outside the security-group tables (where a group's members are
    named by design): what would make the host a neighbour of that address."""
    from canopy.agent.net import tables as t

    firewall = {t.EGRESS_ACL, t.EGRESS_CT, t.EGRESS_RULES, t.EGRESS_COMMIT, t.INGRESS_ACL, t.INGRESS_CT,
                t.INGRESS_RULES, t.INGRESS_COMMIT}
    return [k for k in node.program.flows if address in k
            and not any(k.startswith(f"table={n},") for n in firewall)]
