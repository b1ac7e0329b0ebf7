"""Start a throwaway all-in-one Canopy for a benchmark, and talk to it as admin."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchCloud:
    """An all-in-one in a subprocess, on a private data folder and port."""

    def __init__(self, hosts: int, env: dict[str, str] | None = None) -> None:
        self.hosts = hosts
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="canopy-bench-")
        self.url = f"http://127.0.0.1:{self.port}"
        # The API's rate limits off: a benchmark measures the control plane, not its limits.
        self.env = {**os.environ, "CANOPY_LOG_LEVEL": "WARNING", "CANOPY_API__RATE_LIMITS__ENABLED": "false",
                    **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BenchCloud:
        data = Path(self.tmp.name)
        # The service's output goes to a file: a pipe nobody reads would fill and stall it.
        self.log = (data / "canopy.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "canopy.cli", "all-in-one", "--data-dir", str(data / "var"), "--hosts",
             str(self.hosts), "--port", str(self.port), "--clouds-yaml", str(data / "clouds.yaml")],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthcheck", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"all-in-one exited: {(data / 'canopy.log').read_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError("all-in-one did not come up in 300 s")

    def __exit__(self, *exc: Any) -> None:
        self.log.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not os.environ.get("CANOPY_BENCH_KEEP"):
            self.tmp.cleanup()
        else:
            print(f"kept {self.tmp.name}", file=sys.stderr)

    @property
    def pid(self) -> int:
        """The all-in-one's process id."""
        assert self.proc is not None
        return self.proc.pid

    def token(self, user: str = "admin") -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": user}}},
            "scope": {"project": {"name": user, "domain": {"id": "default"}}}}}
        resp = httpx.post(self.url + "/identity/v3/auth/tokens", json=body)
        resp.raise_for_status()
        return resp.headers["x-subject-token"]

    def statements(self) -> dict[str, float]:
        """The server's SQL statement counters by origin, from /metrics."""
        text = httpx.get(self.url + "/metrics", headers={"X-Auth-Token": self.token()}).text
        out = {}
        for m in re.finditer(r'^canopy_db_statements_total\{origin="([^"]*)"\} ([0-9.e+]+)$', text, re.M):
            out[m.group(1)] = float(m.group(2))
        return out
