"""`make run`'s all-in-one killed with SIGKILL while two dozen boots are in flight, then started again on the
same data: its conductor (the same name) takes its leases back at once, and every boot ends ACTIVE, with
exactly one port and address each and each host's claims equal to the flavors it holds."""

from __future__ import annotations

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
from sqlalchemy import create_engine, func, select

from canopy.db import tables_cell as c
from tests.integration.replication import free_port
from tests.integration.test_multi_service import V, _image, _token

ROOT = Path(__file__).resolve().parents[2]
BOOTS = 24
LEASE_S = 120.0


class AllInOneProcess:
    """`canopy all-in-one` as a subprocess on one data folder, started and killed as an operator would."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CANOPY_API__PORT": str(self.port), "CANOPY_FAKE__HOSTS": "8",
                    "CANOPY_FAKE__SPAWN_DELAY_S": "4", "CANOPY_CONDUCTOR__LEASE_S": str(LEASE_S),
                    "CANOPY_AUTH__TOKEN_SECRET": "crash-secret", "CANOPY_LOG_LEVEL": "INFO"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0

    def start(self) -> None:
        self.lives += 1
        with (self.folder / f"life-{self.lives}.log").open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "canopy.cli", "all-in-one", "--data-dir",
                                          str(self.folder / "data")], cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.wait(lambda: httpx.get(self.url + "/healthcheck", timeout=2).status_code == 200, "the api answering")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")))

    def wait(self, cond: Any, what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = cond()
            except httpx.HTTPError:
                found = None
            if found:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the all-in-one exited while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen in {timeout}s\n{self.logs()}")
            time.sleep(0.1)


@pytest.fixture
def aio() -> Iterator[AllInOneProcess]:
    folder = Path(tempfile.mkdtemp(prefix="canopy-crash-"))
    proc = AllInOneProcess(folder)
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _statuses(url: str, token: str, sids: list[str]) -> dict[str, str]:
    resp = httpx.get(url + "/compute/v2.1/servers/detail?limit=1000", headers={"X-Auth-Token": token, **V},
                     timeout=30)
    assert resp.status_code == 200, resp.text
    return {s["id"]: s["status"] for s in resp.json()["servers"] if s["id"] in sids}


def test_the_all_in_one_killed_mid_boot_resumes_every_build_when_started_again(aio: AllInOneProcess) -> None:
    aio.start()
    token = _token(aio.url)
    image = _image(aio.url, token)
    sids = []
    for n in range(BOOTS):
        body = {"server": {"name": f"crash-{n}", "flavorRef": "1", "imageRef": image, "networks": "auto"}}
        resp = httpx.post(aio.url + "/compute/v2.1/servers", json=body, headers={"X-Auth-Token": token, **V},
                          timeout=30)
        assert resp.status_code == 202, resp.text
        sids.append(resp.json()["server"]["id"])
    engine = create_engine(f"sqlite:///{aio.folder / 'data' / 'canopy.db'}")
    try:
        leased = aio.wait(lambda: _leased(engine) >= 20 and _leased(engine), "20 builds leased and in flight")
        aio.kill()
        assert _leased(engine) >= min(leased, 20), "the killed conductor's leases are still in the database"

        restarted = time.monotonic()
        aio.start()
        token = _token(aio.url)
        aio.wait(lambda: set(_statuses(aio.url, token, sids).values()) <= {"ACTIVE", "ERROR"}, "every build ending")
        took = time.monotonic() - restarted
        statuses = _statuses(aio.url, token, sids)
        assert statuses == dict.fromkeys(sids, "ACTIVE"), statuses
        assert took < LEASE_S / 2, f"the builds resumed after {took:.0f}s: the leases were waited out"
        assert "taking back task" in (aio.folder / "life-2.log").read_text()
        _check_nothing_leaked(engine, sids)
    finally:
        engine.dispose()


def _leased(engine: Any) -> int:
    t = c.tasks.c
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(c.tasks)
                                .where(t.kind == "build", t.lease_owner.is_not(None))).scalar() or 0)


def _check_nothing_leaked(engine: Any, sids: list[str]) -> None:
    i, h = c.instances.c, c.hosts.c
    with engine.connect() as conn:
        ports = dict(conn.execute(select(c.ports.c.device_id, func.count()).where(c.ports.c.device_id.in_(sids))
                                  .group_by(c.ports.c.device_id)).all())
        ips = conn.execute(select(func.count()).select_from(c.ip_allocations.join(
            c.ports, c.ports.c.id == c.ip_allocations.c.port_id)).where(c.ports.c.device_id.in_(sids))).scalar()
        tasks = conn.execute(select(func.count()).select_from(c.tasks)).scalar()
        held: dict[str, list[int]] = {}
        for host, flavor in conn.execute(select(i.host, i.flavor).where(i.host.is_not(None), i.deleted.is_(False))):
            v = held.setdefault(host, [0, 0, 0, 0])
            v[0], v[1], v[2], v[3] = v[0] + flavor["vcpus"], v[1] + flavor["ram"], v[2] + flavor["disk"], v[3] + 1
        counted = {r.name: [r.vcpus_used, r.memory_mb_used, r.local_gb_used, r.running_vms] for r in conn.execute(
            select(h.name, h.vcpus_used, h.memory_mb_used, h.local_gb_used, h.running_vms))}
    assert ports == dict.fromkeys(sids, 1), "one port per server: none leaked, none made twice"
    assert ips == len(sids) and tasks == 0
    assert counted == {name: held.get(name, [0, 0, 0, 0]) for name in counted}, "claims equal the flavors held"
