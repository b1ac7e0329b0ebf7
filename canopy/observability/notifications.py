"""Versioned notifications for billing and monitoring: `instance.create.start`, `.end`, `.error`,
`instance.power_off.*`, `instance.power_on.*`, `instance.reboot.*`, `instance.delete.*`, published by
the conductor on the bus topic "notifications" (fanout: every subscriber gets each one).

The body is the shape OpenStack's versioned notifications have on the wire (priority, event_type,
publisher_id, message_id, timestamp, and a payload of `nova_object.*`-wrapped objects), so a
consumer written for Nova's InstanceActionPayload reads ours. Subscribe with
`bus.serve(Target("notifications"), handler)`; the handler receives `Notification` messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid as uuidlib
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from canopy import context
from canopy.clock import Clock, isotime
from canopy.observability.metrics import NOTIFICATIONS, TASK_DURATION
from canopy.rpc.base import Target, Transport
from canopy.rpc.messages import Message
from canopy.rpc.tasks import BuildPayload

if TYPE_CHECKING:
    from canopy.network.port_record import PortRecord

log = logging.getLogger("canopy.conductor.notifications")
tasklog = logging.getLogger("canopy.conductor.tasks")

# The nova_object namespace and versions a Nova consumer expects for these payloads.
NAMESPACE = "nova"
PAYLOAD_VERSION = "1.8"
POWER_STATES = {0: "pending", 1: "running", 3: "paused", 4: "shutdown", 6: "crashed", 7: "suspended"}
EVENTS = {"build": "instance.create", "start": "instance.power_on", "stop": "instance.power_off",
          "stop_soft": "instance.power_off", "stop_hard": "instance.power_off", "reboot_soft": "instance.reboot",
          "reboot_hard": "instance.reboot", "delete": "instance.delete"}


class Notification(Message):
    """One versioned notification (fanout on the "notifications" topic)."""

    kind: ClassVar[str] = "notification"
    event_type: str
    priority: str = "INFO"
    publisher_id: str
    message_id: str
    timestamp: str
    payload: dict[str, Any]


def versioned(name: str, version: str, data: dict[str, Any]) -> dict[str, Any]:
    """An object as versioned notifications wrap it."""
    return {"nova_object.name": name, "nova_object.namespace": NAMESPACE, "nova_object.version": version,
            "nova_object.data": data}


def flavor_payload(flavor: dict[str, Any]) -> dict[str, Any]:
    return versioned("FlavorPayload", "1.4", {
        "flavorid": str(flavor.get("id", "")), "name": flavor.get("name"), "root_gb": flavor.get("disk", 0),
        "vcpus": flavor.get("vcpus", 0), "ephemeral_gb": flavor.get("ephemeral", 0),
        "memory_mb": flavor.get("ram", 0), "swap": flavor.get("swap", 0), "extra_specs": flavor.get("extra_specs", {}),
        "disabled": False, "rxtx_factor": 1.0, "is_public": True, "vcpu_weight": 0, "projects": None,
        "description": None})


def ip_payloads(addresses: dict[str, list[dict[str, Any]]] | None) -> list[dict[str, Any]]:
    return [versioned("IpPayload", "1.0", {"label": net, "mac": a.get("mac"), "meta": {}, "port_uuid": a.get("port_id"),
                                           "version": a.get("version", 4), "address": a.get("addr"),
                                           "device_name": ""})
            for net, addrs in (addresses or {}).items() for a in addrs]


def exception_payload(kind: str, message: str, function: str = "", module: str = "") -> dict[str, Any]:
    return versioned("ExceptionPayload", "1.1", {"exception": kind, "exception_message": message,
                                                 "function_name": function, "module_name": module, "traceback": ""})


def _time(value: Any) -> str | None:
    return isotime(value) if isinstance(value, dt.datetime) else value


def instance_payload(inst: dict[str, Any], *, request_id: str | None, user_id: str | None = None,
                     project_id: str | None = None, fault: dict[str, Any] | None = None) -> dict[str, Any]:
    """An InstanceActionPayload from an instance row (or the same keys, as a conductor knows them)."""
    data = {
        "uuid": inst["uuid"], "user_id": inst.get("user_id"), "tenant_id": inst.get("project_id"),
        "reservation_id": inst.get("reservation_id", ""), "display_name": inst.get("name"),
        "display_description": inst.get("description"), "host_name": inst.get("hostname"),
        "host": inst.get("host"), "node": inst.get("host"), "os_type": None, "architecture": None,
        "availability_zone": inst.get("availability_zone"), "image_uuid": inst.get("image_ref"),
        "key_name": inst.get("key_name"), "kernel_id": "", "ramdisk_id": "",
        "created_at": _time(inst.get("created_at")), "launched_at": _time(inst.get("launched_at")),
        "terminated_at": _time(inst.get("terminated_at")), "deleted_at": _time(inst.get("deleted_at")),
        "updated_at": _time(inst.get("updated_at")), "state": inst.get("vm_state"),
        "power_state": POWER_STATES.get(int(inst.get("power_state") or 0), "pending"),
        "task_state": inst.get("task_state"), "progress": inst.get("progress", 0),
        "ip_addresses": ip_payloads(inst.get("addresses")), "block_devices": [],
        "flavor": flavor_payload(inst.get("flavor") or {}), "metadata": inst.get("metadata") or {},
        "locked": bool(inst.get("locked")), "locked_reason": None, "auto_disk_config": "MANUAL",
        "request_id": request_id, "action_initiator_user": user_id, "action_initiator_project": project_id,
        "fault": fault,
    }
    return versioned("InstanceActionPayload", PAYLOAD_VERSION, data)


def notification(event_type: str, payload: dict[str, Any], publisher_id: str, now: dt.datetime,
                 priority: str = "INFO") -> Notification:
    return Notification(event_type=event_type, priority=priority, publisher_id=publisher_id,
                        message_id=str(uuidlib.uuid4()), timestamp=now.strftime("%Y-%m-%d %H:%M:%S.%f"),
                        payload=payload)


class Notifier:
    """Publishes notifications on the bus; a failure to publish is logged, never raised."""

    def __init__(self, bus: Transport, publisher_id: str, *, enabled: bool = True,
                 topic: str = "notifications") -> None:
        self.bus = bus
        self.publisher_id = publisher_id
        self.enabled = enabled
        self.topic = topic

    async def emit(self, event_type: str, payload: dict[str, Any], now: dt.datetime, priority: str = "INFO") -> None:
        if not self.enabled:
            return
        try:
            await self.bus.fanout(self.topic, notification(event_type, payload, self.publisher_id, now, priority))
            NOTIFICATIONS.inc(event_type)
        except Exception as exc:  # billing must not be able to fail a server's task
            log.warning("notification %s not published: %s", event_type, exc)


def subscribe(bus: Transport, handler: Any, topic: str = "notifications") -> None:
    """Receive every notification published on the bus (the handler gets `Notification` messages)."""
    bus.serve(Target(topic), handler)


# -- the conductor's task lifecycle: one call at each start, end and failure ------------------------
# What these read of the conductor and of its running task, as protocols: the conductor passes itself
# (or its tasks' environment) and its TaskRun, and this module imports nothing of the layer above.

class Publisher(Protocol):
    """Who publishes a task's notifications: a notifier and a clock."""

    @property
    def notifier(self) -> Notifier: ...

    @property
    def clock(self) -> Clock: ...


class RunningTask(Protocol):
    """The running task a notification reports on."""

    task: dict[str, Any]
    step: str
    host: str | None
    started: dict[str, dt.datetime]

    @property
    def id(self) -> int: ...

    @property
    def instance_uuid(self) -> str: ...

    @property
    def build(self) -> BuildPayload: ...

    @property
    def request_id(self) -> str: ...


def build_view(run: RunningTask) -> dict[str, Any]:
    """A building server as its task payload describes it (a build has no row read yet)."""
    p = run.build
    return {"uuid": run.instance_uuid, "project_id": p.project_id, "user_id": p.user_id,
            "name": p.name, "hostname": p.hostname, "flavor": p.flavor.instance_view(),
            "image_ref": p.image_id, "availability_zone": p.availability_zone,
            "metadata": p.metadata, "host": run.host, "vm_state": "building",
            "task_state": run.step or "scheduling", "power_state": 0}


def addresses_of(run: RunningTask, ports: list[PortRecord]) -> dict[str, list[dict[str, Any]]]:
    """The server's addresses by network name, from the ports its build created."""
    names = {n.network["id"]: n.network.get("name") or n.network["id"] for n in run.build.networks}
    out: dict[str, list[dict[str, Any]]] = {}
    for port in ports:
        label = names.get(port.network_id, port.network_id)
        out.setdefault(label, []).extend(
            {"version": 6 if ":" in ip["ip_address"] else 4, "addr": ip["ip_address"], "mac": port.mac_address,
             "port_id": port.id} for ip in port.fixed_ips)
    return out


async def _publish(cond: Publisher, run: RunningTask, phase: str, instance: dict[str, Any] | None,
                   state: dict[str, Any], fault: dict[str, Any] | None = None) -> None:
    event = EVENTS.get(run.task["kind"])
    if event is None or not cond.notifier.enabled:
        return
    try:
        view = {**(instance or build_view(run)), **state}
        if not view.get("host"):
            view["host"] = run.host
        ctx = context.peek()
        payload = instance_payload(view, request_id=run.request_id, user_id=ctx.user_id if ctx else None,
                                   project_id=ctx.project_id if ctx else None, fault=fault)
    except Exception:  # a notification must never fail the task it reports on
        log.exception("notification %s.%s for %s not built", event, phase, run.instance_uuid)
        return
    await cond.notifier.emit(f"{event}.{phase}", payload, cond.clock.now(), "ERROR" if phase == "error" else "INFO")


def _observe_duration(cond: Publisher, run: RunningTask, result: str) -> float | None:
    started = run.started.get("task")
    if started is None:
        return None
    seconds = (cond.clock.now() - started).total_seconds()
    TASK_DURATION.observe(seconds, run.task["kind"], result)
    return seconds


async def task_started(cond: Publisher, run: RunningTask, instance: dict[str, Any] | None = None) -> None:
    """A conductor starts driving a task: remember when, and publish `<event>.start`."""
    run.started["task"] = cond.clock.now()
    tasklog.info("%s of %s started (task %s, attempt %s)", run.task["kind"], run.instance_uuid, run.id,
                 run.task.get("attempts") or 1, extra={"instance_uuid": run.instance_uuid})
    await _publish(cond, run, "start", instance, {})


async def task_ended(cond: Publisher, run: RunningTask, instance: dict[str, Any] | None = None, **state: Any) -> None:
    """The task succeeded; `state` is what changed (vm_state, power_state, launched_at…)."""
    seconds = _observe_duration(cond, run, "success")
    tasklog.info("%s of %s done%s in %.3fs", run.task["kind"], run.instance_uuid,
                 f" on {run.host}" if run.host else "", seconds or 0.0, extra={"instance_uuid": run.instance_uuid})
    await _publish(cond, run, "end", instance, state)


async def task_failed(cond: Publisher, run: RunningTask, kind: str, message: str,
                      instance: dict[str, Any] | None = None, **state: Any) -> None:
    """The task failed with `kind: message` (the fault's cause)."""
    _observe_duration(cond, run, "error")
    await _publish(cond, run, "error", instance, state, exception_payload(kind, message))
