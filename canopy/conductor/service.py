"""The conductor: leases durable tasks and drives them (build, power, delete); registers hosts;
writes heartbeats in batches; sweeps tasks whose lease expired or whose wake-up was lost."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuidlib
from typing import Any

from canopy import __version__, context
from canopy.clock import Clock
from canopy.conductor import hostsync, records, sgsync
from canopy.conductor.env import TaskEnv
from canopy.conductor.netsync import NetSync
from canopy.conductor.records import EventLog
from canopy.conductor.relay import relay_to_agent
from canopy.conductor.runners import auto_confirm_loop, dispatch
from canopy.conductor.sweeper import StuckSweeper
from canopy.conductor.taskrun import TaskRun, keep_lease
from canopy.config import Settings
from canopy.db import enrollment, inventory
from canopy.observability.metrics import HEARTBEATS
from canopy.observability.notifications import Notifier
from canopy.periodic import pace
from canopy.rpc.base import Target
from canopy.rpc.calls import (
    Heartbeat,
    ListHostInstances,
    Ping,
    Pong,
    PortsChanged,
    PowerStateSync,
    RegisterHost,
    RequestNetworkSync,
    SecurityGroupsChanged,
    WakeTask,
)
from canopy.rpc.calls_relay import AbortLiveMigration, ReadConsole
from canopy.rpc.curve import check_sender
from canopy.rpc.messages import Ack, Message
from canopy.rpc.tasks import TaskRecord
from canopy.runtime import Cloud

log = logging.getLogger("canopy.conductor")
CONDUCTOR_BINARY = "canopy-conductor"
PING_TIMEOUT_S = 5.0


class Conductor:
    """Drives long tasks through their task states."""

    def __init__(self, cloud: Cloud, name: str | None = None, clock: Clock | None = None) -> None:
        self.cloud = cloud
        self.settings = cloud.settings
        self.dbs = cloud.dbs
        self.db = cloud.dbs.cell(cloud.cell_name)
        self.bus = cloud.bus
        self.clock = clock or cloud.clock
        self.name = name or f"conductor-{uuidlib.uuid4().hex[:8]}"
        self._beats: dict[tuple[str, str], dict[str, Any]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        self.started_at = time.monotonic()
        obs = self.settings.observability
        self.notifier = Notifier(self.bus, f"{CONDUCTOR_BINARY}:{self.name}", enabled=obs.notifications,
                                 topic=obs.notification_topic)
        self._services_seen: set[tuple[str, str]] = set()
        # what the task runners get: the conductor's parts, not the conductor
        self.env = TaskEnv(settings=self.settings, dbs=self.dbs, db=self.db, cell_name=cloud.cell_name,
                           bus=self.bus, clock=self.clock, notifier=self.notifier, name=self.name)
        self.active_runs = self.env.active_runs  # task id → the run driving it (the sweeper's)
        self.netsync = self.env.netsync = NetSync(self.env)  # delivers hosts' desired network state to agents

    async def start(self, take_back: bool = True) -> None:
        """Serve, run the periodic loops, and (unless told to wait: `take_back_own_tasks` later) resume the
        tasks an earlier life of this conductor held."""
        await self.db.write(records.upsert_service, CONDUCTOR_BINARY, self.name, __version__, self.clock.now())
        self.bus.serve(Target("conductor"), self.handle)
        self.bus.serve(Target("conductor", self.name), self.handle)
        self._loops = [asyncio.create_task(self._flush_loop(), name="heartbeat-flush"),
                       asyncio.create_task(self._sweep_loop(), name="task-sweeper"),
                       asyncio.create_task(StuckSweeper(self.env).loop(), name="stuck-task-sweeper"),
                       asyncio.create_task(auto_confirm_loop(self.env), name="resize-auto-confirm")]
        await self.netsync.start()
        if take_back:
            await self.take_back_own_tasks()

    async def take_back_own_tasks(self) -> int:
        """Resume at once the tasks an earlier life of this conductor held: their leases carry its name, and
        nothing of this life runs them yet (another conductor would wait out the lease)."""
        ids = await self.db.read_fresh(records.leased_by, self.name)
        for task_id in ids:
            log.warning("taking back task %s, leased by this conductor before it restarted", task_id)
            self._in_background(self.run_task(task_id, reclaim=True))
        return len(ids)

    def _in_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        await self.netsync.stop()
        await self.flush_heartbeats()

    async def handle(self, msg: Message) -> Message | None:
        # With CURVE, an agent's key is bound to its hosts: it may not register, beat or sync for another.
        check_sender(getattr(msg, "host", None))
        if isinstance(msg, WakeTask):
            await self.run_task(msg.task_id, msg.task)
            return None
        if isinstance(msg, Heartbeat):
            HEARTBEATS.inc(msg.binary)
            if msg.binary != "canopy-agent" and (msg.binary, msg.host) not in self._services_seen:
                # control services do not register: the first heartbeat this conductor hears creates the row
                self._services_seen.add((msg.binary, msg.host))
                await self.db.write(records.upsert_service, msg.binary, msg.host, msg.service_version,
                                    self.clock.now())
            # the failing health checks replace the last ones; none failing (or none reported) is NULL
            self._beats[(msg.binary, msg.host)] = {"b_binary": msg.binary, "b_host": msg.host,
                                                   "b_version": msg.service_version, "b_seen": _utc(msg.sent_at),
                                                   "b_health": dict(msg.health) or None}
            return None
        if isinstance(msg, RegisterHost):
            await self.register_host(msg)
            return Ack()
        if isinstance(msg, Ping):
            return await self.ping(msg)
        if isinstance(msg, ListHostInstances):  # an agent reconciling its host
            return await hostsync.list_host_instances(self.env, msg.host)
        if isinstance(msg, PowerStateSync):
            await hostsync.sync_power_states(self.env, msg)
            return None
        if isinstance(msg, (RequestNetworkSync, PortsChanged)):
            return await self.netsync.handle(msg)
        if isinstance(msg, (ReadConsole, AbortLiveMigration)):  # the api's requests for an agent
            return await relay_to_agent(self.bus, msg)
        if isinstance(msg, SecurityGroupsChanged):
            await sgsync.handle(self.env, msg)
            return None
        raise ValueError(f"conductor does not handle {msg.kind}")

    async def ping(self, msg: Ping) -> Pong:
        """Answer a ping, or relay it to the agent it names and say how long that leg took."""
        if msg.host and msg.host != self.name:
            t0 = time.perf_counter()
            reply = await self.bus.call(Target("agent", msg.host), Ping(host=msg.host), timeout=PING_TIMEOUT_S)
            assert isinstance(reply, Pong)
            return reply.model_copy(update={"relay_ms": (time.perf_counter() - t0) * 1000, "relayed_by": self.name})
        return Pong(binary=CONDUCTOR_BINARY, host=self.name, service_version=__version__,
                    uptime_s=time.monotonic() - self.started_at)

    async def register_host(self, msg: RegisterHost) -> None:
        """Record an agent's host and service, and map the host to this cell."""
        now = self.clock.now()
        values = {"name": msg.host, "hypervisor_type": msg.hypervisor_type,
                  "hypervisor_version": msg.hypervisor_version, "host_ip": msg.host_ip, "vcpus": msg.vcpus,
                  "memory_mb": msg.memory_mb, "local_gb": msg.local_gb, "availability_zone": msg.availability_zone,
                  "datacenter": msg.datacenter, "rack": msg.rack}
        # The inventory's word on where the host stands beats the agent's config (issue 19).
        placement = await self.dbs.global_db.read(inventory.host_placement, msg.host)
        if placement is not None:
            values.update(datacenter=placement[0], rack=placement[1])

        def write(conn: Any) -> None:
            records.upsert_host(conn, values, now)
            records.upsert_service(conn, "canopy-agent", msg.host, msg.service_version, now)
            hostsync.record_hypervisor(conn, msg, now)

        await self.db.write(write)
        await self.dbs.global_db.write(records.map_host, msg.host, self.cloud.cell_name)

    async def run_task(self, task_id: int, task: TaskRecord | None = None, reclaim: bool = False) -> None:
        """Lease a task and drive it; if another conductor holds it, do nothing (`reclaim`: a lease under
        this conductor's name is an earlier life's, and is taken back)."""
        lease_s = self.settings.conductor.lease_s
        lease = records.reclaim_lease if reclaim else records.lease_task
        if not await self.db.write(lease, task_id, self.name, self.clock.now(), lease_s):
            return
        run = await self._task_run(task_id, task)
        if run is None:
            return
        woken_by = context.peek()  # the api's context, when its WakeTask woke us: keeps the global ID and user
        if woken_by is None or woken_by.request_id != run.request_id:
            woken_by = context.RequestContext(request_id=run.request_id)
        token = context.set_current(woken_by)
        current = asyncio.current_task()
        if current is not None:
            self.active_runs[task_id] = current

        async def renew() -> None:
            await self.db.write(records.renew_lease, task_id, self.name, self.clock.now(), lease_s)

        try:
            async with keep_lease(renew, lease_s / 3):
                await self._wait_for_earlier_tasks(run)
                await dispatch(self.env, run)
        finally:
            self.active_runs.pop(task_id, None)
            context.reset(token)

    async def _task_run(self, task_id: int, task: TaskRecord | None) -> TaskRun | None:
        """The run of a task: from the record its wake-up carried, else from its row (None: it is gone)."""
        if task is not None:
            return TaskRun(task.columns(), EventLog(task.action_id), payload=task.payload)
        row = await self.db.read_fresh(records.load_task, task_id)
        return TaskRun(row, EventLog(row.get("action_id"))) if row is not None else None

    async def _wait_for_earlier_tasks(self, run: TaskRun) -> None:
        """A delete (or any action) waits while an earlier task of its instance, e.g. its build, runs."""
        if run.task["kind"] == "build":
            return  # always an instance's first task
        while await self.db.read_fresh(records.older_task_exists, run.id, run.instance_uuid):
            await asyncio.sleep(0.1)

    async def flush_heartbeats(self) -> None:
        """Write every heartbeat received since the last flush, in one statement."""
        self._beats[(CONDUCTOR_BINARY, self.name)] = {"b_binary": CONDUCTOR_BINARY, "b_host": self.name,
                                                      "b_version": __version__, "b_seen": self.clock.now(),
                                                      "b_health": None}
        beats, self._beats = list(self._beats.values()), {}
        now = self.clock.now()
        for beat in beats:
            beat["b_now"] = now
        await self.db.write(records.record_heartbeats, beats)
        # An enrolling host becomes schedulable at its first heartbeat with every health check passing.
        healthy = [b["b_host"] for b in beats if b["b_binary"] == "canopy-agent" and not b["b_health"]]
        if healthy:
            for host in await self.db.write(enrollment.complete_enrollments, healthy, now):
                log.info("host %s passed its health checks: enrollment complete, schedulable", host)

    async def _flush_loop(self) -> None:
        first = True
        while True:
            await pace(self.settings.conductor.heartbeat_flush_s, first)
            first = False
            try:
                await self.flush_heartbeats()
            except Exception:
                log.exception("heartbeat flush failed")

    async def sweep(self) -> int:
        """Take over tasks whose lease expired or that nobody picked up; returns how many were found."""
        lost_cast_s = self.settings.conductor.lost_cast_s
        found = await self.db.read_fresh(records.expired_tasks, self.clock.now(), lost_cast_s)
        for row in found:
            log.warning("sweeper: taking over task %s (%s of %s)", row["id"], row["kind"], row["instance_uuid"])
            self._in_background(self.run_task(row["id"]))
        return len(found)

    async def _sweep_loop(self) -> None:
        first = True
        while True:
            await pace(self.settings.conductor.sweep_interval_s, first)
            first = False
            try:
                await self.sweep()
            except Exception:
                log.exception("task sweep failed")


def conductor_name(settings: Settings) -> str:
    """This conductor's name across restarts: the configured one, else one generated once and kept in the
    data folder (two conductors must not share a data folder, or a name)."""
    if settings.conductor.name:
        return settings.conductor.name
    path = settings.data_dir / "conductor-name"
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        name = ""
    if not name:
        name = f"conductor-{uuidlib.uuid4().hex[:8]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(name + "\n")
        tmp.replace(path)  # atomic: a crash leaves the old name or the new one
    return name


def _utc(epoch: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(tzinfo=None)

