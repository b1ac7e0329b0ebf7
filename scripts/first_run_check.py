#!/usr/bin/env python3
"""CI's first step: the README's first command, as a newcomer types it on a fresh clone.

Starts `make run` (which creates .venv and installs Canopy), waits for `/healthcheck`, checks that every
service reports `up`, boots one server through the Compute API to ACTIVE and deletes it, then stops the
cloud by its PID. Any failure exits non-zero with the cloud's last log lines. Standard library only: it
runs before anything is installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URL = os.environ.get("CANOPY_FIRST_RUN_URL", "http://127.0.0.1:8774")
INSTALL_AND_START_S = 900  # a fresh machine installs the base packages first
STEP_S = 60


class CheckFailed(Exception):
    """One step of the first run did not do what the README promises."""


def request(method: str, path: str, body: dict | None = None, token: str = "") -> tuple[int, dict, dict]:
    """One HTTP call: status, JSON body ({} when empty) and headers."""
    headers = {"Content-Type": "application/json", "OpenStack-API-Version": "compute 2.87"}
    if token:
        headers["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers)
    hdrs = {k.lower(): v for k, v in hdrs.items()}
    is_json = hdrs.get("content-type", "").startswith("application/json") and raw.strip()
    return status, (json.loads(raw) if is_json else {}), hdrs


def login(user: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": user}}},
        "scope": {"project": {"name": user, "domain": {"id": "default"}}}}}
    status, _, headers = request("POST", "/identity/v3/auth/tokens", body)
    if status != 201:
        raise CheckFailed(f"login as {user}: HTTP {status}")
    return headers["x-subject-token"]


def wait_for(what: str, check, timeout_s: float, proc: subprocess.Popen[bytes]) -> object:
    """Poll `check` until it returns something truthy; fail if the cloud exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
            if found:
                return found
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if proc.poll() is not None:
            raise CheckFailed(f"`make run` exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise CheckFailed(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.5)


def healthy() -> bool:
    return request("GET", "/healthcheck")[0] == 200


def services_down(admin: str) -> list[str]:
    rows = request("GET", "/compute/v2.1/os-services", token=admin)[1].get("services", [])
    return [f"{r['binary']}@{r['host']}" for r in rows if r["state"] != "up"] if rows else ["(none listed)"]


def boot_and_delete(demo: str, proc: subprocess.Popen[bytes]) -> str:
    """One server to ACTIVE on the public network, then deleted; returns its address."""
    image = request("GET", "/image/v2/images?name=canopy-tiny", token=demo)[1]["images"][0]["id"]
    net = request("GET", "/network/v2.0/networks?name=public", token=demo)[1]["networks"][0]["id"]
    status, body, _ = request("POST", "/compute/v2.1/servers", {"server": {
        "name": "first-run", "flavorRef": "1", "imageRef": image, "networks": [{"uuid": net}]}}, demo)
    if status != 202:
        raise CheckFailed(f"server create: HTTP {status} {body}")
    sid = body["server"]["id"]

    def settled() -> dict | None:
        server = request("GET", f"/compute/v2.1/servers/{sid}", token=demo)[1]["server"]
        return server if server["status"] in ("ACTIVE", "ERROR") else None

    server = wait_for("ACTIVE server", settled, STEP_S, proc)
    if server["status"] != "ACTIVE":  # type: ignore[index]
        raise CheckFailed(f"the server went to ERROR: {server.get('fault')}")  # type: ignore[union-attr]
    addr = server["addresses"]["public"][0]["addr"]  # type: ignore[index]
    if request("DELETE", f"/compute/v2.1/servers/{sid}", token=demo)[0] != 204:
        raise CheckFailed("server delete refused")
    wait_for("server gone", lambda: request("GET", f"/compute/v2.1/servers/{sid}", token=demo)[0] == 404,
             STEP_S, proc)
    return addr


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to `make run` and the cloud it started (its own process group), as a user stops it."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> int:
    log = Path(tempfile.mkdtemp(prefix="canopy-first-run-")) / "make-run.log"
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for("answer on /healthcheck", healthy, INSTALL_AND_START_S, proc)
        up_at = time.monotonic()
        admin, demo = login("admin"), login("demo")
        wait_for("service list with every service up", lambda: not services_down(admin), 20, proc)
        addr = boot_and_delete(demo, proc)
        print(f"first run: `make run` answered after {up_at - t0:.0f} s (install included); every service up; "
              f"a server booted on {addr} and was deleted, {time.monotonic() - up_at:.1f} s after start-up")
        return 0
    except (CheckFailed, KeyError, IndexError, ValueError) as e:
        print(f"first run FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        lines = log.read_text(errors="replace").splitlines()
        print("---- last lines of `make run` ----", *lines[-40:], sep="\n", file=sys.stderr)
        return 1
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
