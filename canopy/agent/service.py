"""The agent: one per hypervisor. Registers its host, heartbeats, and runs driver operations that
conductors send it. It has no database credentials; everything arrives in the messages."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any

from canopy import __version__
from canopy.agent import mobility
from canopy.agent.health import HostHealth, agent_probes
from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.agent.reconcile import HostReconciler, ReconcileReport
from canopy.agent.virt.base import (
    DriverError,
    InstanceNotFound,
    InterfaceHotplug,
    MobileDriver,
    Mobility,
    PowerState,
    VirtDriver,
)
from canopy.observability.logs import log_fields
from canopy.periodic import next_delay
from canopy.rpc.base import BusError, Target, Transport
from canopy.rpc.calls import (
    AttachInterface,
    ConsoleText,
    DestroyInstance,
    DetachInterface,
    GetConsoleOutput,
    Heartbeat,
    InstanceState,
    NetworkSync,
    Ping,
    Pong,
    PowerAction,
    RegisterHost,
    RequestNetworkSync,
    SpawnInstance,
    StepResult,
)
from canopy.rpc.messages import Ack, Message

log = logging.getLogger("canopy.agent")
_SIMPLE_ACTIONS = ("pause", "unpause", "suspend", "resume")

AGENT_BINARY = "canopy-agent"


class Agent:
    """Serves `agent.<host>` on the bus for one hypervisor."""

    def __init__(
        self,
        host: str,
        driver: VirtDriver,
        bus: Transport,
        *,
        heartbeat_s: float = 10.0,
        availability_zone: str = "nova",
        datacenter: str = "dc1",
        rack: str = "",
        rng: random.Random | None = None,
        reconciler: HostReconciler | None = None,
        net: NetNode | None = None,
        health_disks: dict[str, Path] | None = None,
        min_free_disk_gb: float = 5.0,
        scratch_dir: Path | None = None,
        own_heartbeat: bool = True,
    ) -> None:
        self.host = host
        self.driver = driver
        # Resizes, moves, snapshots, rescues: the driver's mobility component, when it has one.
        self.mobility: Mobility | None = driver.mobility if isinstance(driver, MobileDriver) else None
        self.scratch_dir = scratch_dir  # room for a snapshot's temporary copy (default: the system's temp dir)
        self.bus = bus
        self.heartbeat_s = heartbeat_s
        self.availability_zone = availability_zone
        self.datacenter = datacenter
        self.rack = rack
        self.rng = rng or random.Random()
        self._heartbeat: asyncio.Task[None] | None = None
        self._started_at = time.monotonic()
        # Waits for the hypervisor and switch on start, reconciles, syncs power states (real hosts).
        self.reconciler = reconciler
        self.reconcile_report: ReconcileReport | None = None
        # The host's flows: compiled (and kept in a fake switch) unless given a node that applies to OVS.
        self.net = net or NetNode(host, FakeApplier())
        self.net.request_sync = self.net.request_sync or self._request_network_sync
        self.image_uploader: Any = None  # uploads snapshots through the Image API (issue 6)
        # The host's health checks (agent/health.py), chosen on start when the reconciler is known;
        # `health_disks` names the paths whose free space is checked (name -> path).
        self.health = HostHealth(timeout_s=heartbeat_s / 2)
        self.health_disks = dict(health_disks or {})
        self.min_free_disk_gb = min_free_disk_gb
        # False: something else calls `beat()` on a timer (the simulator beats for thousands of agents
        # of one process from one task, instead of a sleeping task per agent).
        self.own_heartbeat = own_heartbeat
        self._spawns: dict[str, asyncio.Future[InstanceState]] = {}  # instance uuid -> its spawn in progress

    async def start(self, register_timeout_s: float = 60.0) -> None:
        """Register with a conductor (retrying with backoff), then serve and heartbeat."""
        if self.reconciler is not None:
            await self.reconciler.wait_ready()  # host_info needs the hypervisor
        self.bus.serve(Target("agent", self.host), self.handle)
        await self._register(register_timeout_s)
        if not self.health.probes:
            self.health.probes = agent_probes(self.driver, self.net, self.reconciler.net if self.reconciler else None,
                                              self.health_disks, self.min_free_disk_gb)
        if self.own_heartbeat:
            self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat-{self.host}")
        await self.net.start()
        if self.reconciler is not None:
            self.reconcile_report = await self.reconciler.start()

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        await self.health.stop()  # before the driver closes: a check would reconnect it
        await self.net.stop()
        if self.reconciler is not None:
            await self.reconciler.stop()
            await self.driver.close()

    async def _register(self, timeout_s: float) -> None:
        info = self.driver.host_info()
        msg = RegisterHost(
            host=self.host, hypervisor_type=info.hypervisor_type, hypervisor_version=info.hypervisor_version,
            host_ip=info.host_ip, vcpus=info.vcpus, memory_mb=info.memory_mb, local_gb=info.local_gb,
            availability_zone=self.availability_zone, datacenter=self.datacenter, rack=self.rack,
            service_version=__version__, accelerator=info.accelerator, cpu_info=info.cpu_info,
        )
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            try:
                await self.bus.call(Target("conductor"), msg, timeout=10)
                return
            except BusError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("agent %s: registration failed (%s); retrying in %.1fs", self.host, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _heartbeat_loop(self) -> None:
        # Start at a random point of the interval so that thousands of agents don't beat in step.
        await asyncio.sleep(self.rng.uniform(0, self.heartbeat_s))
        while True:
            await self.beat()
            await asyncio.sleep(next_delay(self.heartbeat_s, self.rng))

    async def beat(self) -> None:
        """Send one heartbeat with the host's failing health checks."""
        health = await self.health.summary()  # waits at most health.wait_s; else the last round's
        await self.bus.cast(Target("conductor"), Heartbeat(binary=AGENT_BINARY, host=self.host,
                                                           service_version=__version__, sent_at=time.time(),
                                                           health=health))

    async def handle(self, msg: Message) -> Message | None:
        """Run one operation a conductor asked for; its log lines carry this host and the request's ID."""
        with log_fields(service="agent", host=self.host):
            if isinstance(msg, Ping):
                return Pong(binary=AGENT_BINARY, host=self.host, service_version=__version__,
                            uptime_s=time.monotonic() - self._started_at)
            uuid = getattr(msg, "instance_uuid", None) or getattr(getattr(msg, "instance", None), "uuid", "")
            what = f"{msg.kind} {getattr(msg, 'action', '')} {uuid}".replace("  ", " ")
            # a server's operation is worth a line; host-wide syncs (fanned out to every agent) only in DEBUG
            log.log(logging.INFO if uuid else logging.DEBUG, "%s", what, extra={"instance_uuid": uuid})
            try:
                return await self._operate(msg)
            except Exception as exc:
                log.warning("%s failed: %s: %s", what, type(exc).__name__, exc, extra={"instance_uuid": uuid})
                raise

    async def _request_network_sync(self) -> NetworkSync:
        reply = await self.bus.call(Target("conductor"), RequestNetworkSync(host=self.host), timeout=120)
        assert isinstance(reply, NetworkSync)
        return reply

    async def _operate(self, msg: Message) -> Message | None:
        if isinstance(msg, NetworkSync):
            await self.net.handle(msg)
            return Ack()
        if isinstance(msg, SpawnInstance):
            return await self._spawn(msg)
        if isinstance(msg, PowerAction):
            return await self._power(msg)
        if isinstance(msg, DestroyInstance):
            await self.driver.destroy(msg.instance_uuid)
            await self.net.plug()
            return Ack()
        if isinstance(msg, AttachInterface | DetachInterface):
            return await self._hotplug(msg)
        if isinstance(msg, GetConsoleOutput):
            return ConsoleText(output=await self.driver.console_output(msg.instance_uuid, msg.length))
        if isinstance(msg, mobility.HANDLED):
            return await mobility.operate(self, msg)
        raise ValueError(f"agent {self.host} does not handle {msg.kind}")

    async def _spawn(self, msg: SpawnInstance) -> InstanceState:
        """Start the guest. Idempotent: a guest this host holds already, or is still making, is an earlier
        try of the same build (its conductor died before the reply): it is joined or kept, not made twice."""
        uuid = msg.instance.uuid
        running = self._spawns.get(uuid)
        if running is None:
            running = self._spawns[uuid] = asyncio.ensure_future(self._spawn_once(msg))
            running.add_done_callback(lambda _: self._spawns.pop(uuid, None))
        # shielded: a caller that goes away (its conductor died) does not stop the spawn half-way
        return await asyncio.shield(running)

    async def _spawn_once(self, msg: SpawnInstance) -> InstanceState:
        uuid = msg.instance.uuid
        try:
            held: PowerState | None = await self.driver.power_state(uuid)
        except InstanceNotFound:
            held = None
        if held is None:
            await self.driver.spawn(msg.instance)
            step = StepResult(event="spawn", result="Success", details=self.host)
        else:
            if held != PowerState.RUNNING:
                await self.driver.power_on(uuid)
            step = StepResult(event="spawn", result="Success", details=f"{self.host}: the guest existed; adopted")
            log.info("spawn %s: the guest exists already (%s); adopted", uuid, PowerState(held).name,
                     extra={"instance_uuid": uuid})
        await self.net.plug()  # its taps exist now
        return InstanceState(instance_uuid=uuid, power_state=PowerState.RUNNING, steps=[step])

    async def _hotplug(self, msg: AttachInterface | DetachInterface) -> Ack:
        """Attach or detach one NIC, then plug (or forget) its tap on the switch."""
        if not isinstance(self.driver, InterfaceHotplug):
            raise DriverError(f"the driver of agent {self.host} cannot attach or detach interfaces")
        if isinstance(msg, AttachInterface):
            await self.driver.attach_interface(msg.instance_uuid, msg.port)
        else:
            await self.driver.detach_interface(msg.instance_uuid, msg.port_id)
        await self.net.plug()
        return Ack()

    async def _power(self, msg: PowerAction) -> InstanceState:
        uuid, steps = msg.instance_uuid, []
        if msg.action == "start":
            await self.driver.power_on(uuid)
            steps.append(StepResult(event="power_on", result="Success"))
        elif msg.action in ("stop", "stop_soft"):
            clean = await self.driver.shutdown(uuid, msg.timeout_s)
            steps.append(StepResult(event="clean_shutdown", result="Success" if clean else "Timeout",
                                    details="" if clean else f"guest still running after {msg.timeout_s:g}s"))
            if not clean and msg.action == "stop_soft":
                raise DriverError(f"guest ignored the shutdown request for {msg.timeout_s:g}s; it is still running")
            if not clean:
                await self.driver.power_off(uuid)
                steps.append(StepResult(event="hard_power_off", result="Success"))
        elif msg.action == "stop_hard":
            await self.driver.power_off(uuid)
            steps.append(StepResult(event="hard_power_off", result="Success"))
        elif msg.action == "reboot_soft":
            steps.extend(await self._soft_reboot(uuid, msg.timeout_s))
        elif msg.action == "reboot_hard":
            await self.driver.reboot(uuid, hard=True)
            steps.append(StepResult(event="hard_reboot", result="Success"))
        elif msg.action in _SIMPLE_ACTIONS:  # pause, unpause, suspend, resume
            await getattr(self.driver, msg.action)(uuid)
            steps.append(StepResult(event=msg.action, result="Success"))
        else:
            raise ValueError(f"unknown power action {msg.action!r}")
        return InstanceState(instance_uuid=uuid, power_state=await self.driver.power_state(uuid), steps=steps)

    async def _soft_reboot(self, uuid: str, timeout_s: float) -> list[StepResult]:
        try:
            await asyncio.wait_for(self.driver.reboot(uuid, hard=False), timeout_s)
            return [StepResult(event="soft_reboot", result="Success")]
        except (DriverError, TimeoutError) as exc:
            # As Nova does: a guest that won't reboot cleanly is rebooted hard.
            await self.driver.reboot(uuid, hard=True)
            return [StepResult(event="soft_reboot", result="Error", details=str(exc) or "timed out"),
                    StepResult(event="hard_reboot", result="Success")]
