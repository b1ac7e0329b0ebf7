"""A private Open vSwitch in a folder of its own: an ovsdb-server and an ovs-vswitchd with the
userspace datapaths (no kernel module), found by the tools through OVS_RUNDIR. The tests, the benchmark
and the all-in-one's "apply to a real switch" option start one; it is stopped by its own control
sockets, and by PID if it does not go.

    ovs = PrivateOvs(Path("/tmp/x")); ovs.start()
    OvsApplier("br-int", rundir=ovs.rundir, datapath_type="dummy", tap_type="dummy")
    ovs.stop()
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


class OvsUnavailable(RuntimeError):
    """Open vSwitch is not installed on this machine."""


def ovs_installed() -> bool:
    """Whether the Open vSwitch daemons and tools are installed."""
    return all(shutil.which(b) for b in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl")) and SCHEMA.exists()


class PrivateOvs:
    """One private Open vSwitch instance (ovs-vswitchd optionally inside a network namespace)."""

    def __init__(self, rundir: Path, netns: str | None = None) -> None:
        self.rundir = Path(rundir)
        self.netns = netns
        self.env = {**os.environ, **{k: str(self.rundir) for k in
                                     ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR")}}

    def _run(self, *args: str) -> str:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> PrivateOvs:
        """Create the database and start both daemons (well under a second)."""
        if not ovs_installed():
            raise OvsUnavailable("Open vSwitch is not installed (apt-get install openvswitch-switch)")
        d = self.rundir
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "conf.db").exists():
            self._run("ovsdb-tool", "create", str(d / "conf.db"), str(SCHEMA))
        self._run("ovsdb-server", "--detach", "--no-chdir", f"--pidfile={d}/ovsdb-server.pid",
                  f"--log-file={d}/ovsdb-server.log", f"--remote=punix:{d}/db.sock", str(d / "conf.db"))
        self._run("ovs-vsctl", "--no-wait", "init")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self._run(*prefix, "ovs-vswitchd", "--enable-dummy", "--disable-system", "--disable-system-route", "--detach",
                  "--no-chdir", f"--pidfile={d}/ovs-vswitchd.pid", f"--log-file={d}/ovs-vswitchd.log")
        self._run("ovs-vsctl", "--timeout=10", "show")  # waits until vswitchd talks to the database
        return self

    def pid(self, daemon: str) -> int | None:
        try:
            return int((self.rundir / f"{daemon}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self) -> None:
        """Stop both daemons: ask them to exit, and kill them by PID if their pidfile stays."""
        for daemon, extra in (("ovs-vswitchd", ["--cleanup"]), ("ovsdb-server", [])):
            pid = self.pid(daemon)
            if pid is None:
                continue
            ctl = self.rundir / f"{daemon}.{pid}.ctl"
            subprocess.run(["ovs-appctl", "-t", str(ctl), "exit", *extra], env=self.env, capture_output=True,
                           timeout=30)
            self._wait_gone(daemon, pid)

    def _wait_gone(self, daemon: str, pid: int, timeout_s: float = 5.0) -> None:
        # An exited daemon may linger as a zombie here, so its pidfile (removed on exit) is the signal.
        deadline = time.monotonic() + timeout_s
        pidfile = self.rundir / f"{daemon}.pid"
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if pidfile.exists():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            pidfile.unlink(missing_ok=True)

    def vsctl(self, *args: str) -> str:
        """ovs-vsctl against this instance."""
        return self._run("ovs-vsctl", "--timeout=30", *args)

    def ofctl(self, *args: str) -> str:
        """ovs-ofctl (OpenFlow 1.3) against this instance."""
        return self._run("ovs-ofctl", "-O", "OpenFlow13", *args)

    def appctl(self, *args: str) -> str:
        """ovs-appctl to this instance's ovs-vswitchd."""
        pid = self.pid("ovs-vswitchd")
        return self._run("ovs-appctl", "-t", str(self.rundir / f"ovs-vswitchd.{pid}.ctl"), *args)

    def trace(self, bridge: str, packet: str) -> tuple[str, str]:
        """`ofproto/trace` of a packet: (the datapath actions, e.g. "2" or "drop", and the whole trace)."""
        out = self.appctl("ofproto/trace", bridge, packet)
        actions = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                        if line.startswith("Datapath actions:")), "")
        return actions, out
