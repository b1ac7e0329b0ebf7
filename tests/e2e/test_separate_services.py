"""Each service as its own process, as an operator runs them: api, conductor, scheduler and two agents
talking over ZeroMQ (control services bind, agents connect out), sharing one database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.clouds import ROOT
from tests.clouds import free_port as _free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("services")
    api_port, cond_port, sched_port = _free_port(), _free_port(), _free_port()
    cond, sched = f"tcp://127.0.0.1:{cond_port}", f"tcp://127.0.0.1:{sched_port}"
    base = {**os.environ, "CANOPY_BUS__TRANSPORT": "zmq", "CANOPY_API__PORT": str(api_port),
            "CANOPY_FAKE__SPAWN_DELAY_S": "0.05", "CANOPY_AGENT__HEARTBEAT_S": "1"}
    canopy = [sys.executable, "-m", "canopy.cli"]
    for cmd in (["db", "upgrade"], ["db", "seed"]):
        subprocess.run([*canopy, *cmd, "--data-dir", str(folder)], cwd=ROOT, env=base, check=True,
                       capture_output=True, timeout=120)
    layout = [
        (["conductor"], {"CANOPY_BUS__ZMQ_BIND": cond, "CANOPY_BUS__ZMQ_CONNECT": json.dumps([sched])}),
        (["scheduler"], {"CANOPY_BUS__ZMQ_BINDS": json.dumps({"scheduler": sched})}),
        (["agent", "--host", "hv-a"], {"CANOPY_BUS__ZMQ_CONNECT": json.dumps([cond])}),
        (["agent", "--host", "hv-b"], {"CANOPY_BUS__ZMQ_CONNECT": json.dumps([cond])}),
        (["api"], {"CANOPY_BUS__ZMQ_CONNECT": json.dumps([cond, sched])}),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for args, env in layout:
            with (folder / f"{args[0]}-{len(procs)}.log").open("wb") as log:
                procs.append(subprocess.Popen([*canopy, *args, "--data-dir", str(folder)], cwd=ROOT,
                                              env={**base, **env}, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if len(_agents_up(url)) == 2:
                    break
            except httpx.HTTPError:
                pass
            dead = [p.args for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-1500:] for p in folder.glob("*.log"))
                raise RuntimeError(f"services did not start ({dead}):\n{logs}")
            time.sleep(0.2)
        yield url
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _token(url: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"id": "default"}, "password": "demo"}}},
        "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}
    return httpx.post(url + "/identity/v3/auth/tokens", json=body).headers["x-subject-token"]


def test_a_boot_crosses_every_service_over_zeromq(services: str) -> None:
    h = {"X-Auth-Token": _token(services), "OpenStack-API-Version": "compute 2.87"}
    with httpx.Client(base_url=services, headers=h, timeout=30) as c:
        image = c.get("/image/v2/images?name=canopy-tiny").json()["images"][0]["id"]
        resp = c.post("/compute/v2.1/servers", json={"server": {
            "name": "zmq-1", "flavorRef": "1", "imageRef": image, "networks": "auto"}})
        assert resp.status_code == 202, resp.text
        sid = resp.json()["server"]["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            server = c.get(f"/compute/v2.1/servers/{sid}").json()["server"]
            if server["status"] in ("ACTIVE", "ERROR"):
                break
            time.sleep(0.1)
        assert server["status"] == "ACTIVE", server.get("fault")
        assert server["addresses"]["public"][0]["addr"].startswith("203.0.113.")
        assert c.post(f"/compute/v2.1/servers/{sid}/action", json={"os-stop": None}).status_code == 202
        while c.get(f"/compute/v2.1/servers/{sid}").json()["server"]["status"] != "SHUTOFF":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert c.delete(f"/compute/v2.1/servers/{sid}").status_code == 204
        while c.get(f"/compute/v2.1/servers/{sid}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _admin_services(url: str) -> list[dict[str, str]]:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "admin"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    token = httpx.post(url + "/identity/v3/auth/tokens", json=body, timeout=5).headers["x-subject-token"]
    return httpx.get(url + "/compute/v2.1/os-services", headers={"X-Auth-Token": token},  # type: ignore[no-any-return]
                     timeout=5).json()["services"]


def _agents_up(url: str) -> set[str]:
    return {r["host"] for r in _admin_services(url) if r["binary"] == "canopy-agent" and r["state"] == "up"}


def test_agents_registered_and_heartbeat(services: str) -> None:
    time.sleep(2.5)  # past a heartbeat and a batched flush
    rows = _admin_services(services)
    agents = {r["host"]: r["state"] for r in rows if r["binary"] == "canopy-agent"}
    assert agents == {"hv-a": "up", "hv-b": "up"}
    up = {r["binary"] for r in rows if r["state"] == "up"}
    assert {"canopy-conductor", "canopy-scheduler", "canopy-api", "canopy-agent"} <= up, rows


