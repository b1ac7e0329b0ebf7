"""Drain and retire a host through the compute API, as an admin (issue 19): the same checks, states, action
records and migration machinery as any operator's request, nothing written behind the api's back.

    drain    disable the host's agent service (so nothing new lands there), mark its inventory record
             `draining`, then move every server: live (`os-migrateLive`, host chosen by the scheduler)
             when asked and the server is ACTIVE, else cold (`migrate`, then `confirmResize`); a server
             that cannot move (its status, no valid host, a failed migration) is reported with the reason
    retire   refused unless the host is disabled and holds no server; then its service and host rows
             go (`DELETE /os-services/{id}`, which also unmaps it) and its inventory record

Moves run a few at a time (`concurrency`); the wait for each is bounded (`timeout_s`) and its poll
interval and clock are injected, so tests run without real sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

V = {"OpenStack-API-Version": "compute 2.87"}
AGENT_BINARIES = ("canopy-agent", "nova-compute")
MOVABLE = ("ACTIVE", "SHUTOFF")  # Nova's migrate accepts these; live migration needs ACTIVE
PAGE = 500


class DrainError(Exception):
    """The host cannot be drained or retired: the reason, for the operator."""


@dataclass
class Move:
    """One server's move off the host: how it went and why."""

    server_id: str
    name: str
    status: str
    how: str = ""  # live, cold, or "" when it did not move
    to_host: str = ""
    error: str = ""

    @property
    def moved(self) -> bool:
        return bool(self.to_host) and not self.error


Progress = Callable[[Move], None]


class HostDrainer:
    """Drains or retires hosts with an admin's API session (`http`: base URL and X-Auth-Token set)."""

    def __init__(self, http: httpx.AsyncClient, *, concurrency: int = 4, timeout_s: float = 900.0,
                 poll_s: float = 0.5, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.http, self.concurrency, self.timeout_s, self.poll_s = http, concurrency, timeout_s, poll_s
        self.sleep, self.clock = sleep, clock

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.http.request(method, "/compute/v2.1" + path, headers=V, **kw)

    async def service(self, host: str) -> dict[str, Any]:
        """The host's agent service, as GET /os-services shows it (DrainError when there is none)."""
        resp = await self._call("GET", "/os-services", params={"host": host})
        found = [s for s in resp.json().get("services", []) if s["binary"] in AGENT_BINARIES]
        if resp.status_code != 200 or not found:
            raise DrainError(f"Host {host} has no compute service (is it a hypervisor's name?).")
        return dict(found[0])

    async def servers_on(self, host: str) -> list[dict[str, Any]]:
        """Every server the api places on `host`, all projects, page by page."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"all_tenants": "1", "host": host, "limit": PAGE}
        while True:
            resp = await self._call("GET", "/servers/detail", params=params)
            resp.raise_for_status()
            page = resp.json()["servers"]
            out += page
            if len(page) < PAGE:
                return out
            params["marker"] = page[-1]["id"]

    async def drain(self, host: str, *, live: bool, progress: Progress | None = None) -> list[Move]:
        """Disable the host and move its servers away; one Move per server, in the order listed."""
        svc = await self.service(host)
        resp = await self._call("PUT", f"/os-services/{svc['id']}",
                                json={"status": "disabled", "disabled_reason": "draining (canopy host drain)"})
        if resp.status_code != 200:
            raise DrainError(f"Could not disable host {host}: {_message(resp)}")
        await self._call("PUT", f"/canopy-inventory/hosts/{host}", json={"host": {"state": "draining"}})
        moves = [Move(s["id"], s["name"], s["status"]) for s in await self.servers_on(host)]
        gate = asyncio.Semaphore(self.concurrency)

        async def one(m: Move) -> None:
            async with gate:
                await self.move(host, m, live=live)
            if progress is not None:
                progress(m)

        await asyncio.gather(*(one(m) for m in moves))
        return moves

    async def move(self, host: str, m: Move, *, live: bool) -> None:
        """Move one server: live if asked and ACTIVE (falling back to cold), else cold; the outcome in `m`."""
        if m.status not in MOVABLE:
            m.error = f"status {m.status}: only ACTIVE or SHUTOFF servers can be migrated"
            return
        if live and m.status == "ACTIVE":
            live_error = await self._live(host, m)
            if m.moved:
                return
            m.error = ""
            cold_error = await self._cold(host, m)
            if cold_error:
                m.error = f"live: {live_error}; cold: {cold_error}"
            return
        m.error = await self._cold(host, m)

    async def _live(self, host: str, m: Move) -> str:
        resp = await self._call("POST", f"/servers/{m.server_id}/action",
                                json={"os-migrateLive": {"host": None, "block_migration": "auto"}})
        if resp.status_code != 202:
            return _message(resp)
        s = await self._settle(m.server_id, {"ACTIVE", "ERROR", "SHUTOFF"})
        return self._landed(host, m, s, "live")

    async def _cold(self, host: str, m: Move) -> str:
        resp = await self._call("POST", f"/servers/{m.server_id}/action", json={"migrate": None})
        if resp.status_code != 202:
            return _message(resp)
        s = await self._settle(m.server_id, {"VERIFY_RESIZE", "ACTIVE", "SHUTOFF", "ERROR"})
        if s.get("status") == "VERIFY_RESIZE":
            resp = await self._call("POST", f"/servers/{m.server_id}/action", json={"confirmResize": None})
            if resp.status_code not in (202, 204):
                return f"confirmResize: {_message(resp)}"
            s = await self._settle(m.server_id, {"ACTIVE", "SHUTOFF", "ERROR"})
        return self._landed(host, m, s, "cold")

    def _landed(self, host: str, m: Move, s: dict[str, Any], how: str) -> str:
        where = s.get("OS-EXT-SRV-ATTR:host") or ""
        if s.get("status") in ("ACTIVE", "SHUTOFF") and where and where != host:
            m.how, m.to_host = how, where
            return ""
        fault = (s.get("fault") or {}).get("message") or ""
        return fault or s.get("_why") or f"still on {where or host} ({s.get('status')})"

    async def _settle(self, server_id: str, statuses: set[str]) -> dict[str, Any]:
        """Poll until the server shows one of `statuses` with no task running (bounded by timeout_s)."""
        deadline = self.clock() + self.timeout_s
        s: dict[str, Any] = {}
        while self.clock() < deadline:
            resp = await self._call("GET", f"/servers/{server_id}")
            if resp.status_code == 200:
                s = resp.json()["server"]
                if s["status"] in statuses and not s.get("OS-EXT-STS:task_state"):
                    return dict(s)
            await self.sleep(self.poll_s)
        return {**s, "_why": f"no outcome within {self.timeout_s:g}s (status {s.get('status')})"}

    async def retire(self, host: str) -> None:
        """Remove a drained, empty host: its service, host row, cell mapping and inventory record."""
        svc = await self.service(host)
        if svc.get("status") != "disabled":
            raise DrainError(f"Host {host} is not drained: its service is {svc.get('status')} "
                             f"(run canopy host drain {host} first).")
        left = await self.servers_on(host)
        if left:
            raise DrainError(f"Host {host} still holds {len(left)} server(s): "
                             f"{', '.join(s['id'] for s in left[:5])}{' …' if len(left) > 5 else ''}.")
        resp = await self._call("DELETE", f"/os-services/{svc['id']}")
        if resp.status_code != 204:
            raise DrainError(f"Could not remove host {host}'s service: {_message(resp)}")
        resp = await self._call("DELETE", f"/canopy-inventory/hosts/{host}")
        if resp.status_code not in (204, 404):  # a host the inventory never knew is fine
            raise DrainError(f"Could not remove host {host}'s inventory record: {_message(resp)}")


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return f"{resp.status_code} {next(iter(body.values()))['message']}"
    except Exception:  # noqa: BLE001 - a non-JSON answer is shown as text
        return f"{resp.status_code} {resp.text[:200]}"
