"""The processes of a simulated cloud: a generated configuration, the real control services (`canopy api`,
`canopy scheduler`, `canopy conductor`, each through canopy.sim.probe) and the agent processes
(canopy.sim.swarm), each on its own ports, logs and stats file, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from canopy.sim.topology import host_layout


@dataclass
class Layout:
    """What to start."""

    hosts: int
    api: int = 1
    schedulers: int = 1
    conductors: int = 1
    agent_procs: int = 2
    db: str = ""  # empty: SQLite in the work folder
    bus: str = "zmq"
    dcs: int = 1
    racks_per_dc: int = 10
    heartbeat_s: float = 10.0
    spawn_delay_s: float = 0.2
    op_delay_s: float = 0.05
    public_ip_hold_s: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_of(data: dict[str, dict[str, Any]]) -> str:
    """A TOML document of tables of scalars and lists (all the configuration needs)."""
    out = []
    for table, values in data.items():
        out.append(f"[{table}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


@dataclass
class Proc:
    """One process of the cloud."""

    role: str
    popen: subprocess.Popen[bytes]
    stats: Path
    args: list[str]
    env: dict[str, str]
    log: Path


@dataclass
class SimCloud:
    """The started cloud; `stop()` ends every process it started, by PID."""

    layout: Layout
    work: Path
    procs: list[Proc] = field(default_factory=list)
    api_urls: list[str] = field(default_factory=list)
    db_url: str = ""
    created_db: str = ""
    conductor_endpoints: list[str] = field(default_factory=list)
    scheduler_endpoints: list[str] = field(default_factory=list)
    host_names: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.work / "sim.toml"

    def write_config(self) -> None:
        """The configuration every process reads (per-process ports come from the environment)."""
        lay = self.layout
        self.db_url = self._database()
        sqlite = self.db_url.startswith("sqlite")
        data: dict[str, dict[str, Any]] = {
            "database": {"global_url": self.db_url, "cell_url": self.db_url, "pool_size": 20,
                         # SQLite shared by several processes: transactions off the event loop (a lock wait
                         # must not stall every request of the process)
                         "execution": "thread" if sqlite else "auto"},
            "bus": {"transport": lay.bus, "call_timeout_s": 60.0},
            "auth": {"token_secret": uuid.uuid4().hex},
            "quota": {"instances": 10_000_000, "cores": 100_000_000, "ram": 1_000_000_000},
            "agent": {"heartbeat_s": lay.heartbeat_s, "power_sync_s": 30.0, "reconcile_s": 600.0},
            "fake": {"spawn_delay_s": lay.spawn_delay_s, "op_delay_s": lay.op_delay_s},
            "network": {"public_ip_hold_s": lay.public_ip_hold_s, "reconcile_s": 600.0, "full_sync_s": 3600.0},
            "conductor": {"agent_call_timeout_s": 60.0, "lease_s": 30.0},
            "observability": {"log_format": "text", "notifications": False},
        }
        self.work.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f'data_dir = "{self.work / "data"}"\nlog_level = "WARNING"\n\n' + toml_of(data))

    def _database(self) -> str:
        url = self.layout.db
        if not url:
            return f"sqlite:///{(self.work / 'data' / 'canopy.db').resolve()}"
        if url.rstrip("/").count("/") <= 2:  # a server without a database: make one for this run
            from sqlalchemy import create_engine, text

            self.created_db = f"canopy_sim_{uuid.uuid4().hex[:8]}"
            engine = create_engine(url.rstrip("/") + "/mysql" if "mysql" in url else url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {self.created_db}"))
            engine.dispose()
            return url.rstrip("/") + "/" + self.created_db
        return url

    def _env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "CANOPY_CONFIG": str(self.config), **extra}

    def _spawn(self, role: str, args: list[str], env: dict[str, str]) -> Proc:
        (self.work / "logs").mkdir(exist_ok=True)
        (self.work / "stats").mkdir(exist_ok=True)
        stats, log = self.work / "stats" / f"{role}.json", self.work / "logs" / f"{role}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        proc = Proc(role, popen, stats, args, env, log)
        self.procs.append(proc)
        return proc

    def _control(self, role: str, command: str, env: dict[str, str]) -> Proc:
        stats = self.work / "stats" / f"{role}.json"
        return self._spawn(role, ["-m", "canopy.sim.probe", str(stats), command], self._env(**env))

    def migrate_and_seed(self) -> None:
        """`canopy db upgrade` and `canopy db seed`, as an operator runs them."""
        for cmd in (["db", "upgrade"], ["db", "seed"]):
            subprocess.run([sys.executable, "-m", "canopy.cli", *cmd], env=self._env(), check=True,
                           capture_output=True, timeout=300)

    def start_control(self) -> None:
        """Schedulers, conductors and api processes on their own ports; waits for the api to answer."""
        lay = self.layout
        self.scheduler_endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(lay.schedulers)]
        self.conductor_endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(lay.conductors)]
        conds, scheds = json.dumps(self.conductor_endpoints), json.dumps(self.scheduler_endpoints)
        for n, ep in enumerate(self.scheduler_endpoints):
            self._control(f"scheduler-{n}", "scheduler", {"CANOPY_BUS__ZMQ_BINDS": json.dumps({"scheduler": ep}),
                                                          "CANOPY_BUS__ZMQ_CONNECT": conds})
        for n, ep in enumerate(self.conductor_endpoints):
            self._control(f"conductor-{n}", "conductor", {"CANOPY_BUS__ZMQ_BINDS": json.dumps({"conductor": ep}),
                                                          "CANOPY_BUS__ZMQ_CONNECT": scheds})
        for n in range(lay.api):
            port = free_port()
            self.api_urls.append(f"http://127.0.0.1:{port}")
            self._control(f"api-{n}", "api", {"CANOPY_API__PORT": str(port),
                                              "CANOPY_BUS__ZMQ_CONNECT": json.dumps([*self.conductor_endpoints,
                                                                                     *self.scheduler_endpoints])})
        self._wait(lambda: all(_answers(u + "/healthcheck") for u in self.api_urls), 120, "the api")

    def start_agents(self, faults: dict[str, float], enroll: dict[str, float]) -> None:
        """The agent processes, each holding its share of the hosts."""
        lay = self.layout
        layout = host_layout(lay.hosts, lay.dcs, lay.racks_per_dc)
        self.host_names = [h[0] for h in layout]
        (self.work / "answers").mkdir(exist_ok=True)
        for n in range(lay.agent_procs):
            spec = {"config": str(self.config), "index": n, "hosts": layout[n::lay.agent_procs],
                    "stats": str(self.work / "stats" / f"agents-{n}.json"), "answers": str(self.work / "answers"),
                    "faults": faults, "enroll": enroll}
            path = self.work / f"swarm-{n}.json"
            path.write_text(json.dumps(spec))
            self._spawn(f"agents-{n}", ["-m", "canopy.sim.swarm", str(path)],
                        self._env(CANOPY_BUS__ZMQ_CONNECT=json.dumps(self.conductor_endpoints)))

    def wait_agents(self, timeout_s: float, progress: Any = None) -> None:
        """Until every agent process says its agents are registered."""
        ready = [self.work / "answers" / f"ready-{n}" for n in range(self.layout.agent_procs)]

        def done() -> bool:
            if progress is not None:
                progress(self.agents_held())
            return all(p.exists() for p in ready)

        self._wait(done, timeout_s, "the agents")

    def agents_held(self) -> int:
        total = 0
        for p in self.agent_procs():
            try:
                total += json.loads(p.stats.read_text()).get("agents_held", 0)
            except (OSError, ValueError):
                pass
        return total

    def agent_procs(self) -> list[Proc]:
        return [p for p in self.procs if p.role.startswith("agents-")]

    def _wait(self, ready: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p for p in self.procs if p.popen.poll() is not None]
            if dead or time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.role}\n{p.log.read_text()[-2000:]}" for p in (dead or self.procs))
                raise RuntimeError(f"{what} did not come up ({[p.role for p in dead]} exited):\n{tails}")
            time.sleep(0.2)

    def signal_agents(self, sig: int) -> None:
        for p in self.agent_procs():
            p.popen.send_signal(sig)

    def host_states(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Every host's guests and flow digest, asked of each agent process (SIGUSR2)."""
        answers = [self.work / "answers" / f"state-{n}.json" for n in range(self.layout.agent_procs)]
        for a in answers:
            a.unlink(missing_ok=True)
        self.signal_agents(signal.SIGUSR2)
        self._wait(lambda: all(a.exists() for a in answers), timeout_s, "the host states")
        out: dict[str, Any] = {}
        for a in answers:
            out.update(json.loads(a.read_text()))
        return out

    def restart(self, proc: Proc) -> Proc:
        """Kill a process (SIGKILL, as a crash) and start it again with the same arguments."""
        proc.popen.kill()
        proc.popen.wait()
        self.procs.remove(proc)
        return self._spawn(proc.role, proc.args, proc.env)

    def stop(self) -> None:
        """SIGTERM every process (agents first), then SIGKILL what is left; drop a database made for the run."""
        for group in (self.agent_procs(), [p for p in self.procs if not p.role.startswith("agents-")]):
            for p in group:
                if p.popen.poll() is None:
                    p.popen.terminate()
            for p in group:
                try:
                    p.popen.wait(30)
                except subprocess.TimeoutExpired:
                    p.popen.kill()
                    p.popen.wait()

    def drop_database(self) -> None:
        if self.created_db:
            from sqlalchemy import create_engine, text

            engine = create_engine(self.db_url.rsplit("/", 1)[0] + "/mysql", isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {self.created_db}"))
            engine.dispose()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
