"""Several of each control service: two api, two scheduler and two conductor processes (plus two
agents) against one MariaDB primary with a replica, on one ZeroMQ bus, each a `canopy` process.

A boot goes through them; then a conductor driving boots is killed (SIGKILL) in the middle of a spawn,
and no boot is lost: the other conductor takes its tasks over when their leases expire, or the killed
one, started again on its data folder under the same name, takes them back at once; every build ends
ACTIVE. Boots go on working.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from canopy.db import tables_cell as c
from tests.integration.replication import MariaDBPair, free_port

ROOT = Path(__file__).resolve().parents[2]
CANOPY = [sys.executable, "-m", "canopy.cli"]
V = {"OpenStack-API-Version": "compute 2.87"}


class Fleet:
    """The processes of the test, by role, and where their logs go."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api_urls: list[str] = []
        self.control: dict[str, str] = {}  # a control service's name -> its ZeroMQ address

    def run(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen([*CANOPY, *args, "--data-dir", str(self.folder / name)], cwd=ROOT,
                                    env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _conductor_names(engine: Any) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(c.services.c.host).where(c.services.c.binary == "canopy-conductor")
                                 .order_by(c.services.c.id)).scalars())


def _wait(cond: Any, what: str, fleet: Fleet, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = cond()
        except (httpx.HTTPError, KeyError):
            found = None
        if found:
            return found
        dead = [n for n, p in fleet.procs.items() if p.poll() is not None and n != "killed"]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout}s (exited: {dead})\n{fleet.logs()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[Fleet, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="canopy-fleet-"))
    pair = MariaDBPair.start(folder / "db")
    engine = create_engine(pair.primary_url)
    control = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("conductor-a", "conductor-b",
                                                                   "scheduler-a", "scheduler-b")}
    env = {**os.environ, "CANOPY_DATABASE__GLOBAL_URL": pair.primary_url, "CANOPY_DATABASE__CELL_URL": pair.primary_url,
           "CANOPY_DATABASE__REPLICA_URLS": json.dumps([pair.replica_url]), "CANOPY_BUS__TRANSPORT": "zmq",
           "CANOPY_BUS__ZMQ_CONNECT": json.dumps(list(control.values())), "CANOPY_AUTH__TOKEN_SECRET": "fleet-secret",
           "CANOPY_CONDUCTOR__LEASE_S": "3", "CANOPY_CONDUCTOR__SWEEP_INTERVAL_S": "0.5",
           "CANOPY_CONDUCTOR__LOST_CAST_S": "2", "CANOPY_FAKE__SPAWN_DELAY_S": "4", "CANOPY_AGENT__HEARTBEAT_S": "1",
           "CANOPY_LOG_LEVEL": "INFO"}
    fleet = Fleet(folder, env)
    fleet.control = control
    try:
        for cmd in (["db", "upgrade"], ["db", "seed"]):
            subprocess.run([*CANOPY, *cmd, "--data-dir", str(folder / "setup")], cwd=ROOT, env=env, check=True,
                           capture_output=True, timeout=120)
        for n, name in enumerate(("conductor-a", "conductor-b"), 1):  # one at a time, to know which row is whose
            fleet.run(name, ["conductor"], CANOPY_BUS__ZMQ_BIND=control[name])
            _wait(lambda n=n: len(_conductor_names(engine)) >= n, f"{name} registered", fleet)  # type: ignore[misc]
        for name in ("scheduler-a", "scheduler-b"):
            fleet.run(name, ["scheduler"], CANOPY_BUS__ZMQ_BINDS=json.dumps({"scheduler": control[name]}))
        for host in ("hv-1", "hv-2"):
            fleet.run(f"agent-{host}", ["agent", "--host", host])
        for name in ("api-a", "api-b"):
            port = free_port()
            fleet.run(name, ["api"], CANOPY_API__PORT=str(port))
            fleet.api_urls.append(f"http://127.0.0.1:{port}")
        for url in fleet.api_urls:
            _wait(lambda u=url: httpx.get(u + "/healthcheck", timeout=2).status_code == 200,  # type: ignore[misc]
                  f"{url} answering", fleet)
        yield fleet, engine
    finally:
        fleet.stop()
        engine.dispose()
        pair.close()
        shutil.rmtree(folder, ignore_errors=True)


def _token(url: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"id": "default"}, "password": "demo"}}},
        "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}
    return httpx.post(url + "/identity/v3/auth/tokens", json=body, timeout=10).headers["x-subject-token"]


def _boot(url: str, token: str, name: str) -> str:
    body = {"server": {"name": name, "flavorRef": "1", "imageRef": _image(url, token), "networks": "auto"}}
    resp = httpx.post(url + "/compute/v2.1/servers", json=body, headers={"X-Auth-Token": token, **V}, timeout=30)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["server"]["id"])


def _image(url: str, token: str) -> str:
    images = httpx.get(url + "/image/v2/images?name=canopy-tiny", headers={"X-Auth-Token": token}, timeout=10)
    return str(images.json()["images"][0]["id"])


def _server(url: str, token: str, sid: str) -> dict[str, Any]:
    resp = httpx.get(f"{url}/compute/v2.1/servers/{sid}", headers={"X-Auth-Token": token, **V}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["server"]  # type: ignore[no-any-return]


def test_a_boot_goes_through_two_of_each_service(fleet: tuple[Fleet, Any]) -> None:
    f, _engine = fleet
    api_a, api_b = f.api_urls
    token = _token(api_a)  # signed with the shared secret: the other api accepts it too
    sid = _boot(api_a, token, "multi-1")
    assert _server(api_b, token, sid)["status"] == "BUILD"  # the other api sees it at once (a fresh read)
    server = _wait(lambda: (s := _server(api_b, token, sid))["status"] in ("ACTIVE", "ERROR") and s, "ACTIVE", f)
    assert server["status"] == "ACTIVE", server.get("fault")


def test_killing_a_conductor_mid_boot_loses_no_boot(fleet: tuple[Fleet, Any]) -> None:
    f, engine = fleet
    api_a, api_b = f.api_urls
    names = dict(zip(("conductor-a", "conductor-b"), _conductor_names(engine), strict=False))
    token = _token(api_a)
    sids = [_boot((api_a, api_b)[n % 2], token, f"multi-killed-{n}") for n in range(6)]

    def owner_while_spawning() -> str | None:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT t.lease_owner FROM tasks t JOIN instances i ON i.uuid = t.instance_uuid "
                                    "WHERE i.task_state = 'spawning' AND t.lease_owner IS NOT NULL LIMIT 1")).first()
        return row[0] if row is not None else None

    owner = _wait(owner_while_spawning, "a build reaching spawning", f)
    victim = next(role for role, name in names.items() if name == owner)
    f.procs[victim].send_signal(signal.SIGKILL)  # no goodbye, no cleanup: its leases just stop being renewed
    f.procs[victim].wait(10)
    f.procs["killed"] = f.procs.pop(victim)
    f.run(victim, ["conductor"], CANOPY_BUS__ZMQ_BIND=f.control[victim])  # its data folder: the same name

    for sid in sids:
        server = _wait(lambda sid=sid: (s := _server(api_a, token, sid))["status"] in ("ACTIVE", "ERROR") and s,  # type: ignore[misc]
                       f"{sid} leaving BUILD", f, timeout=90)
        assert server["status"] == "ACTIVE", server.get("fault")
    print(f"killed {victim} ({owner}) during spawning; every build ended ACTIVE")
    assert _conductor_names(engine) == list(names.values()), "the restarted conductor kept its name"
    with engine.connect() as conn:  # nothing left behind: no task still waiting for a dead conductor
        assert conn.execute(select(c.tasks.c.id).where(c.tasks.c.instance_uuid.in_(sids))).first() is None

    again = _boot(api_a, token, "after-the-kill")
    server = _wait(lambda: (s := _server(api_b, token, again))["status"] in ("ACTIVE", "ERROR") and s, "ACTIVE", f)
    assert server["status"] == "ACTIVE", server.get("fault")
