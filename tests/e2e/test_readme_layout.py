"""The README's production layout, followed as written: its `canopy.toml` on the control machine (one
`zmq_bind`) starts the conductor, the scheduler and the api side by side, and its `agent.toml` an agent;
a server boots to ACTIVE across them. Only host names, ports and the database URL are swapped for local ones."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clouds import ROOT
from tests.clouds import free_port as _free_port
from tests.databases import MARIADB_SERVER, fresh_database

pytestmark = pytest.mark.e2e


def readme_toml(marker: str) -> str:
    """The README's TOML block whose first line is `marker`."""
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b for b in blocks if b.startswith(marker)]
    assert len(found) == 1, f"the README has no single TOML block starting {marker!r}"
    return found[0]


def _free_pair() -> int:
    """A port P with P+1 free too (the conductor and the scheduler of one `zmq_bind`)."""
    for _ in range(50):
        port = _free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


def localize(text: str, *, db_url: str, bus_port: int, api_port: int) -> str:
    """The README's file with local host names, ports and database (a replica is not part of this test)."""
    text = re.sub(r'"mysql://[^"]*db\.example/canopy"', f'"{db_url}"', text)
    text = re.sub(r"^replica_urls = .*$", "", text, flags=re.M)
    text = text.replace("control-1.example", "127.0.0.1")
    text = text.replace(":7100", f":{bus_port}").replace(":7101", f":{bus_port + 1}")
    return text.replace("8774", str(api_port))


@pytest.fixture(scope="module")
def mariadb_url() -> Iterator[str]:
    """The README's layout runs on MariaDB, as its file says (a database of the test's own)."""
    yield from fresh_database(MARIADB_SERVER, "test")


@pytest.fixture(scope="module")
def readme_cloud(tmp_path_factory: pytest.TempPathFactory, mariadb_url: str) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("readme")
    bus_port, api_port = _free_pair(), _free_port()
    for name, marker in (("canopy.toml", "# canopy.toml"), ("agent.toml", "# agent.toml")):
        (folder / name).write_text(localize(readme_toml(marker), db_url=mariadb_url, bus_port=bus_port,
                                            api_port=api_port))
    canopy = [sys.executable, "-m", "canopy.cli"]
    control = ["--config", str(folder / "canopy.toml"), "--data-dir", str(folder)]
    for cmd in (["db", "upgrade"], ["db", "seed"]):
        subprocess.run([*canopy, *cmd, *control], cwd=ROOT, check=True, capture_output=True, timeout=120)
    layout = [["conductor", *control], ["scheduler", *control], ["api", *control],
              ["agent", "--config", str(folder / "agent.toml"), "--data-dir", str(folder / "hv"), "--host", "hv-0001"]]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for args in layout:
            with (folder / f"{args[0]}.log").open("wb") as log:
                procs.append(subprocess.Popen([*canopy, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{api_port}"
        _wait_for_services(url, procs, folder)
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


def _token(url: str, user: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": user}}},
        "scope": {"project": {"name": user, "domain": {"id": "default"}}}}}
    return httpx.post(url + "/identity/v3/auth/tokens", json=body, timeout=5).headers["x-subject-token"]


def _services_up(url: str) -> set[str]:
    rows = httpx.get(url + "/compute/v2.1/os-services", headers={"X-Auth-Token": _token(url, "admin")},
                     timeout=5).json()["services"]
    return {f"{r['binary']}@{r['host']}" for r in rows if r["state"] == "up"}


def _wait_for_services(url: str, procs: list[subprocess.Popen[bytes]], folder: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            up = {s.split("@")[0] for s in _services_up(url)}
            if {"canopy-conductor", "canopy-scheduler", "canopy-api", "canopy-agent"} <= up:
                return
        except (httpx.HTTPError, KeyError):
            pass
        dead = [p.args[3] for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"== {p.name}\n{p.read_text()[-1500:]}" for p in folder.glob("*.log"))
            raise RuntimeError(f"the README's layout did not start (exited: {dead}):\n{logs}")
        time.sleep(0.2)


def test_the_readme_layout_boots_a_server(readme_cloud: str) -> None:
    h = {"X-Auth-Token": _token(readme_cloud, "demo"), "OpenStack-API-Version": "compute 2.87"}
    with httpx.Client(base_url=readme_cloud, headers=h, timeout=30) as c:
        image = c.get("/image/v2/images?name=canopy-tiny").json()["images"][0]["id"]
        resp = c.post("/compute/v2.1/servers", json={"server": {
            "name": "readme-1", "flavorRef": "1", "imageRef": image, "networks": "auto"}})
        assert resp.status_code == 202, resp.text
        sid = resp.json()["server"]["id"]
        deadline = time.monotonic() + 60
        while (server := c.get(f"/compute/v2.1/servers/{sid}").json()["server"])["status"] not in ("ACTIVE", "ERROR"):
            assert time.monotonic() < deadline, server
            time.sleep(0.1)
        assert server["status"] == "ACTIVE", server.get("fault")
        assert c.delete(f"/compute/v2.1/servers/{sid}").status_code == 204
