"""Durable task payloads: what the api asks a conductor to do, typed and versioned.

The api writes a payload into the task row (JSON) and sends the row inside `WakeTask`; the conductor
and the scheduler read it back through these models. A reader accepts its own version and the one
before it, so a conductor of the next release can finish tasks an older api wrote.

Version 1 was the untyped dict of the first releases: no `version` key, and a flavor whose sizes were
named as Nova's API names them (`ram`, `disk`, `ephemeral`, `swap`). Version 2 names the sizes as the
bus messages do (`memory_mb`, `disk_gb`, `ephemeral_gb`, `swap_mb`), from the api to the agent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from canopy.rpc.messages import UnsupportedVersion

PAYLOAD_VERSION = 2
# A version-1 flavor's keys and their version-2 names.
_V1_FLAVOR_KEYS = {"ram": "memory_mb", "disk": "disk_gb", "ephemeral": "ephemeral_gb", "swap": "swap_mb"}


class FlavorSnapshot(BaseModel):
    """A flavor's sizes as they were when the task was asked for (a flavor may change or go later)."""

    model_config = ConfigDict(frozen=True)
    id: str = ""
    name: str = ""
    vcpus: int
    memory_mb: int
    disk_gb: int
    ephemeral_gb: int = 0
    swap_mb: int = 0
    extra_specs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        if isinstance(data, dict) and "memory_mb" not in data and "ram" in data:
            return {_V1_FLAVOR_KEYS.get(k, k): v for k, v in data.items()}
        return data

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> FlavorSnapshot:
        """The snapshot of a row of the flavors table (the one place its `ram_mb` column is read)."""
        return cls(id=str(row["id"]), name=row["name"], vcpus=row["vcpus"], memory_mb=row["ram_mb"],
                   disk_gb=row["disk_gb"], ephemeral_gb=row["ephemeral_gb"] or 0, swap_mb=row["swap_mb"] or 0,
                   extra_specs=row["extra_specs"] or {})

    def instance_view(self) -> dict[str, Any]:
        """The flavor as an instance row keeps it and the compute API shows it (Nova's names)."""
        return {"id": self.id, "name": self.name, "vcpus": self.vcpus, "ram": self.memory_mb, "disk": self.disk_gb,
                "ephemeral": self.ephemeral_gb, "swap": self.swap_mb, "extra_specs": dict(self.extra_specs)}


class NetworkChoice(BaseModel):
    """A network a server is attached to at boot: its row, its subnets, the fixed IP asked for."""

    network: dict[str, Any]
    subnets: list[dict[str, Any]] = Field(default_factory=list)
    fixed_ip: str | None = None
    port_id: str | None = None  # a port the user created beforehand (claimed by the api, bound at boot)


class GroupHint(BaseModel):
    """The server group a create named, resolved to its policy and rules."""

    id: int
    uuid: str
    policy: str
    rules: dict[str, Any] = Field(default_factory=dict)


class SchedulerHints(BaseModel):
    """The `os:scheduler_hints` of a create, validated."""

    group: GroupHint | None = None
    same_host: list[str] = Field(default_factory=list)
    different_host: list[str] = Field(default_factory=list)


class BuildPayload(BaseModel):
    """Everything a conductor needs to boot one server, and the scheduler to place it."""

    version: int = PAYLOAD_VERSION
    flavor: FlavorSnapshot
    image_id: str
    name: str
    hostname: str
    project_id: str = ""
    user_id: str | None = None
    networks: list[NetworkChoice] = Field(default_factory=list)
    availability_zone: str | None = None
    force_host: str | None = None
    key_data: str | None = None
    user_data: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    scheduler_hints: SchedulerHints = Field(default_factory=SchedulerHints)
    image_properties: dict[str, Any] = Field(default_factory=dict)
    reservation_id: str = ""
    count: int = 1  # the size of the multi-create batch this server belongs to
    admin_pass: str | None = None  # handed to the guest (config drive); the task row goes when the build ends
    # the ids of the security groups of the ports the boot creates (None: a payload from before security
    # groups: the project's default group)
    security_groups: list[str] | None = None


class ActionPayload(BaseModel):
    """The arguments of a task on an existing server (power, delete, the mobility tasks); most have none."""

    version: int = PAYLOAD_VERSION
    timeout_s: float | None = None  # stop_soft: how long the guest may take to shut down
    host: str | None = None  # migrate, live_migrate, evacuate: a target an admin named
    flavor: FlavorSnapshot | None = None  # resize: the new flavor
    image_id: str | None = None  # rebuild: the new image; snapshot: the image to upload into
    name: str | None = None  # rebuild: the new name
    rescue_image_ref: str | None = None  # rescue: the image to boot the rescue guest from
    admin_pass: str | None = None  # rebuild, rescue: the guest's new admin password
    backup_type: str | None = None  # createBackup: the kind of backup (daily, weekly…) rotated together
    rotation: int | None = None  # createBackup: how many backups of that type to keep
    offload: bool | None = None  # shelve: offload at once (shelved_offload_time 0)
    availability_zone: str | None = None  # unshelve (2.77+): the zone to place an offloaded server in
    port_id: str | None = None  # attach_interface, detach_interface: the port


TaskPayload = BuildPayload | ActionPayload


def parse_payload(kind: str, data: dict[str, Any] | TaskPayload | None) -> TaskPayload:
    """The typed payload of a task of `kind`, from this version or the previous one."""
    if isinstance(data, BuildPayload | ActionPayload):
        return data
    body = dict(data or {})
    version = int(body.get("version", 1))
    if version not in (PAYLOAD_VERSION, PAYLOAD_VERSION - 1):
        raise UnsupportedVersion(f"{kind} task payload version {version} is not readable here "
                                 f"(this side speaks {PAYLOAD_VERSION})")
    body["version"] = PAYLOAD_VERSION
    model: type[TaskPayload] = BuildPayload if kind == "build" else ActionPayload
    return model.model_validate(body)


def dump_payload(payload: TaskPayload) -> dict[str, Any]:
    """The payload as the task row stores it (JSON-ready; unset arguments left out)."""
    return payload.model_dump(mode="json", exclude_none=isinstance(payload, ActionPayload))


class TaskRecord(BaseModel):
    """A task row as the api wrote it, sent along in `WakeTask` so the conductor need not read it back."""

    model_config = ConfigDict(extra="ignore")
    id: int
    instance_uuid: str
    kind: str
    action_id: int | None = None
    request_id: str
    attempts: int = 0
    payload: TaskPayload

    @model_validator(mode="before")
    @classmethod
    def _typed_payload(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" in data:
            return {**data, "payload": parse_payload(data["kind"], data.get("payload"))}
        return data

    def columns(self) -> dict[str, Any]:
        """The row's columns other than the payload (what a TaskRun keeps as `task`)."""
        return {"id": self.id, "instance_uuid": self.instance_uuid, "kind": self.kind, "action_id": self.action_id,
                "request_id": self.request_id, "attempts": self.attempts}
