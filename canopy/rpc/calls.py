"""The typed messages the control services and agents exchange (one class per call)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from canopy.rpc.messages import Message

# -- to conductors ---------------------------------------------------------------------------------


class WakeTask(Message):
    """A durable task row is waiting; the conductor that leases it runs it."""

    kind: ClassVar[str] = "wake_task"
    task_id: int
    instance_uuid: str
    task_kind: str
    # The task row as written, so the conductor need not read it back; the row stays the truth.
    task: dict[str, Any] | None = None


class RegisterHost(Message):
    """An agent announces its host, its capacity and its hypervisor (call; the reply is an Ack)."""

    kind: ClassVar[str] = "register_host"
    host: str
    hypervisor_type: str
    hypervisor_version: int
    host_ip: str | None = None
    vcpus: int
    memory_mb: int
    local_gb: int
    availability_zone: str = "nova"
    datacenter: str = "dc1"
    rack: str = ""
    service_version: str = ""


class Heartbeat(Message):
    """A service is alive (cast; conductors write heartbeats to the database in batches)."""

    kind: ClassVar[str] = "heartbeat"
    binary: str
    host: str
    service_version: str = ""
    sent_at: float


# -- to schedulers ---------------------------------------------------------------------------------


class SelectHost(Message):
    """Pick a host for one instance and claim its resources there (call; reply: HostSelected)."""

    kind: ClassVar[str] = "select_host"
    instance_uuid: str
    project_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    availability_zone: str | None = None
    force_host: str | None = None
    exclude_hosts: list[str] = Field(default_factory=list)


class HostSelected(Message):
    kind: ClassVar[str] = "host_selected"
    host: str
    availability_zone: str


# -- to agents -------------------------------------------------------------------------------------


class PortSpec(Message):
    """A port as the agent needs it: to plug the guest's NIC and to tell the guest its addresses."""

    kind: ClassVar[str] = "port_spec"
    id: str
    mac_address: str
    network_id: str
    fixed_ips: list[dict[str, Any]] = Field(default_factory=list)


class InstanceSpec(Message):
    """Everything an agent needs to create a guest; it never reads the database."""

    kind: ClassVar[str] = "instance_spec"
    uuid: str
    name: str
    hostname: str
    project_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image_id: str
    flavor_extra_specs: dict[str, str] = Field(default_factory=dict)
    ports: list[PortSpec] = Field(default_factory=list)
    key_data: str | None = None
    user_data: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class SpawnInstance(Message):
    kind: ClassVar[str] = "spawn_instance"
    instance: InstanceSpec


class PowerAction(Message):
    """start, stop (clean then hard), stop_soft, stop_hard, reboot_soft, reboot_hard."""

    kind: ClassVar[str] = "power_action"
    instance_uuid: str
    action: str
    timeout_s: float = 60.0


class DestroyInstance(Message):
    kind: ClassVar[str] = "destroy_instance"
    instance_uuid: str


class StepResult(Message):
    """One step an agent took for a request, recorded as an instance action event."""

    kind: ClassVar[str] = "step_result"
    event: str
    result: str
    details: str = ""


class InstanceState(Message):
    """An agent's reply: the guest's power state afterwards, and the steps it took."""

    kind: ClassVar[str] = "instance_state"
    instance_uuid: str
    power_state: int
    steps: list[StepResult] = Field(default_factory=list)
