"""Private message brokers for tests and bench/bus.py: a nats-server and a RabbitMQ node, each on
free loopback ports, in a folder of its own, stopped by the PIDs this code started.

    with NatsServer.start() as nats:        # ready in milliseconds
        nats.url; nats.restart()
    with RabbitNode.start() as rabbit:      # a few seconds: an Erlang VM and its epmd
        rabbit.url; rabbit.restart()        # the same node name, data folder and port again
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.replication import free_port

RABBIT_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = shutil.which("epmd") or next(iter(sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))), "epmd")


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def _wait(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not _listening(port):
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"broker on :{port} exited with {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker on :{port} did not listen within {timeout}s")
        time.sleep(0.05)


def _stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """Stop a process we started in its own session, with everything it started (by process group)."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # anything of the group still there (the group's id is our pid)
        os.killpg(proc.pid, signal.SIGKILL)


class NatsServer:
    """A private nats-server (core NATS, default 1 MiB max payload)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, port: int | None = None) -> NatsServer:
        server = cls(port or free_port())
        server._run()
        return server

    def _run(self) -> None:
        self.proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self.port, self.proc, 10)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (every client is cut off), stay down `down_s`, start it on the same port."""
        self.stop()
        time.sleep(down_s)
        self._run()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> NatsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RabbitNode:
    """A private RabbitMQ node with its own HOME, node name, ports, data and log folders, and epmd."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.name = f"canopy{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls) -> RabbitNode:
        node = cls(Path(tempfile.mkdtemp(prefix="canopy-rabbit-")))
        try:
            node._run()
        except BaseException:
            node.close()
            raise
        return node

    def _env(self) -> dict[str, str]:
        r = self.root
        (r / "home").mkdir(exist_ok=True)
        (r / "rabbitmq.conf").write_text("loopback_users = none\nvm_memory_high_watermark.relative = 0.2\n"
                                         "disk_free_limit.absolute = 50MB\n")
        return {
            **os.environ, "HOME": str(r / "home"), "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(r / "mnesia"), "RABBITMQ_LOG_BASE": str(r / "log"),
            "RABBITMQ_CONFIG_FILE": str(r / "rabbitmq.conf"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(r / "plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "", "RABBITMQ_PID_FILE": str(r / "rabbit.pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(r / "advanced.config"),
        }

    def _run(self) -> None:
        if self.epmd is None:
            # our own epmd, started first so the node uses it rather than daemonizing one we cannot name
            self.epmd = subprocess.Popen([EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait(self.epmd_port, self.epmd, 10)
        # its own session: the Erlang VM and its helpers form one group we stop together
        with (self.root / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen([RABBIT_SERVER], env=self._env(), cwd=self.root, start_new_session=True,
                                         stdout=out, stderr=subprocess.STDOUT)
        _wait(self.port, self.proc, 60, self.root / "stdout.log")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def stop(self) -> None:
        _stop_group(self.proc)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the node and start it again with the same data (durable queues come back)."""
        self.stop()
        time.sleep(down_s)
        self._run()

    def close(self) -> None:
        self.stop()
        if self.epmd is not None:
            self.epmd.terminate()
            self.epmd.wait(10)
            self.epmd = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
