"""What is alive: an agent process that stops shows down in os-services once service_down_s has passed
and is no longer chosen by the scheduler; restarted, it is up and chosen again. `canopy service ping`
reaches it through a conductor over ZeroMQ. The control plane runs in-process on a ZeroMQ bus; the
agent is a real `canopy agent` process, started and stopped by its PID."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from canopy import __version__
from tests.clouds import ROOT, ApiClient, V, free_port, in_process_cloud, make_settings, server_body, wait_for_server

DOWN_S = 1.5
MV = {"OpenStack-API-Version": "compute 2.53"}


class AgentProcess:
    """`canopy agent --host NAME` connecting to the test's control bus; stopped by its PID."""

    def __init__(self, host: str, endpoint: str, folder: Path) -> None:
        self.host, self.folder = host, folder
        self.env = {**os.environ, "CANOPY_BUS__TRANSPORT": "zmq", "CANOPY_BUS__ZMQ_CONNECT": json.dumps([endpoint]),
                    "CANOPY_AGENT__HEARTBEAT_S": "0.2", "CANOPY_FAKE__SPAWN_DELAY_S": "0",
                    "CANOPY_FAKE__OP_DELAY_S": "0"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"agent-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "canopy.cli", "agent", "--host", self.host, "--data-dir",
                                      str(self.folder / "agent")], cwd=ROOT, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.folder.glob("agent-*.log")))


@pytest.fixture
async def zmq_stack(data_dir: Path) -> AsyncIterator[Any]:
    """A control plane (conductor, scheduler, api, one in-process agent hv-0001) bound on a ZeroMQ port."""
    settings = make_settings(data_dir)
    settings.bus.transport = "zmq"
    settings.bus.zmq_bind = f"tcp://127.0.0.1:{free_port()}"
    settings.fake.spawn_delay_s = settings.fake.op_delay_s = 0.0
    settings.agent.heartbeat_s = 0.2
    settings.conductor.heartbeat_flush_s = 0.1
    settings.scheduler.service_down_s = DOWN_S
    async with in_process_cloud(settings, 1) as aio:
        yield aio


@pytest.fixture
def agent(zmq_stack: Any, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess("hv-ext", zmq_stack.settings.bus.zmq_bind, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


async def service_state(api: ApiClient, host: str) -> str | None:
    services = (await api.get(f"/compute/v2.1/os-services?host={host}&binary=canopy-agent", headers=MV)).json()
    return services["services"][0]["state"] if services["services"] else None


async def wait_state(api: ApiClient, host: str, state: str, timeout: float, agent: AgentProcess) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await service_state(api, host) == state:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"{host} never became {state} in {timeout}s; agent log:\n{agent.log_text()}")


def ping_cli(endpoint: str, host: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CANOPY_BUS__TRANSPORT": "zmq", "CANOPY_BUS__ZMQ_CONNECT": json.dumps([endpoint])}
    return subprocess.run([sys.executable, "-m", "canopy.cli", "service", "ping", host, "--count", "2", "--timeout",
                           "3", "--data-dir", str(data_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


async def boot_on(api: ApiClient, host: str | None) -> dict[str, Any]:
    over = {"availability_zone": f"nova:{host}"} if host else {}
    resp = await api.post("/compute/v2.1/servers", json=server_body(**over), headers=V)
    assert resp.status_code == 202, resp.text
    return await wait_for_server(api, resp.json()["server"]["id"], {"ACTIVE", "ERROR"})


async def test_a_stopped_agent_goes_down_is_not_chosen_and_comes_back(zmq_stack: Any, agent: AgentProcess,
                                                                      tmp_path: Path) -> None:
    api, endpoint = zmq_stack.api, zmq_stack.settings.bus.zmq_bind
    agent.start()
    await wait_state(api, "hv-ext", "up", 30, agent)
    pinged = await asyncio.to_thread(ping_cli, endpoint, "hv-ext", tmp_path)
    assert pinged.returncode == 0, pinged.stdout + pinged.stderr
    answers = re.findall(r"canopy-agent on hv-ext: version (\S+), round trip ([\d.]+) ms; "
                         r"conductor conductor-0 → agent ([\d.]+) ms", pinged.stdout)
    assert len(answers) == 2 and answers[0][0] == __version__ and float(answers[0][1]) > 0, pinged.stdout
    assert (await boot_on(api, "hv-ext"))["status"] == "ACTIVE"

    agent.stop()
    took = await wait_state(api, "hv-ext", "down", DOWN_S + 5, agent)
    assert took <= DOWN_S + 2
    fleet = (await api.get("/healthcheck/fleet")).json()["fleet"]
    assert fleet["totals"]["down"] == 1 and [h["host"] for h in fleet["down_hosts"]] == ["hv-ext"]
    await zmq_stack.scheduler.refresh(force=True)
    refused = await boot_on(api, "hv-ext")
    assert refused["status"] == "ERROR" and "No valid host" in refused["fault"]["message"], refused.get("fault")
    for _ in range(3):
        placed = await boot_on(api, None)
        assert placed["status"] == "ACTIVE" and placed["OS-EXT-SRV-ATTR:host"] == "hv-0001"
    silent = await asyncio.to_thread(ping_cli, endpoint, "hv-ext", tmp_path)
    assert silent.returncode == 1 and "hv-ext did not answer" in silent.stdout, silent.stdout + silent.stderr

    agent.start()
    await wait_state(api, "hv-ext", "up", 30, agent)
    await zmq_stack.scheduler.refresh(force=True)
    back = await boot_on(api, "hv-ext")
    assert back["status"] == "ACTIVE" and back["OS-EXT-SRV-ATTR:host"] == "hv-ext"


def test_ping_refuses_the_in_process_bus(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "canopy.cli", "service", "ping", "hv-1", "--data-dir", str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "CANOPY_BUS__TRANSPORT": "local"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "network bus" in proc.stdout
