"""An all-in-one Canopy in a subprocess: started on a free port, stopped by its PID (the e2e tests' helper)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.clouds import ROOT, free_port


@dataclass
class RunningCloud:
    url: str
    clouds_yaml: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def auth_url(self) -> str:
        return self.url + "/identity"


@contextlib.contextmanager
def run_all_in_one(folder: Path, hosts: int, env: dict[str, str]) -> Iterator[RunningCloud]:
    """`canopy all-in-one` on a free port with data under `folder`; stopped by its PID when the block ends."""
    port = free_port()
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
