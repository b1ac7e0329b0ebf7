"""An all-in-one Canopy in a subprocess, shared by the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningCloud:
    url: str
    clouds_yaml: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def auth_url(self) -> str:
        return self.url + "/identity"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def run_all_in_one(folder: Path, hosts: int, env: dict[str, str]) -> Iterator[RunningCloud]:
    """`canopy all-in-one` on a free port with data under `folder`; stopped by its PID when the block ends."""
    port = _free_port()
    log = folder / "canopy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "canopy.cli", "all-in-one", "--data-dir", str(folder / "var"), "--hosts",
             str(hosts), "--port", str(port), "--clouds-yaml", str(folder / "clouds.yaml")],
            cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthcheck", timeout=1).status_code == 200 and (folder / "clouds.yaml").exists():
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"all-in-one did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        yield RunningCloud(url, folder / "clouds.yaml", proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def running_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    """`canopy all-in-one` on a free port with 4 simulated hypervisors; stopped by its PID afterwards."""
    env = {"CANOPY_FAKE__SPAWN_DELAY_S": "0.05", "CANOPY_FAKE__OP_DELAY_S": "0.02",
           "CANOPY_FAKE__VCPUS": "16", "CANOPY_FAKE__MEMORY_MB": "32768", "CANOPY_FAKE__DISK_GB": "500"}
    with run_all_in_one(tmp_path_factory.mktemp("e2e"), 4, env) as cloud:
        yield cloud
