"""The messages of server mobility (issue 6): resize and cold migration (the disk set aside, pulled by the
target agent, confirmed or reverted), snapshots, rebuild, rescue and live migration."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from canopy.rpc.calls import InstanceSpec, PortSpec
from canopy.rpc.messages import Message


class MigrateOut(Message):
    """Source agent: stop the guest and set its disk aside for a resize or migration (call; reply: DiskInfo).
    The guest stays set aside until ConfirmMigration (deleted) or RevertMigration (restored)."""

    kind: ClassVar[str] = "migrate_out"
    instance_uuid: str
    timeout_s: float = 60.0


class DiskInfo(Message):
    """A guest's disk as set aside: its size in bytes, format, and the image its base came from."""

    kind: ClassVar[str] = "disk_info"
    instance_uuid: str
    size: int
    disk_format: str
    image_id: str = ""


class ReadDisk(Message):
    """Target agent → source agent: `length` bytes of a set-aside disk from `offset` (reply: DiskChunk)."""

    kind: ClassVar[str] = "read_disk"
    instance_uuid: str
    offset: int
    length: int


class DiskChunk(Message):
    kind: ClassVar[str] = "disk_chunk"
    data_b64: str
    eof: bool = False


class FinishMigration(Message):
    """Target agent: fetch the disk from `source_host` (itself for a resize in place), grow it to the spec's
    disk, define the guest with the spec's flavor and start it if `power_on` (reply: InstanceState)."""

    kind: ClassVar[str] = "finish_migration"
    instance: InstanceSpec
    source_host: str
    disk: DiskInfo
    power_on: bool = True


class ConfirmMigration(Message):
    """Source agent: the move is confirmed; delete what was set aside (reply: Ack)."""

    kind: ClassVar[str] = "confirm_migration"
    instance_uuid: str


class RevertMigration(Message):
    """Source agent: restore the set-aside guest as it was and start it if `power_on` (reply: InstanceState)."""

    kind: ClassVar[str] = "revert_migration"
    instance_uuid: str
    ports: list[PortSpec] = Field(default_factory=list)
    power_on: bool = True


class SnapshotInstance(Message):
    """Agent: copy the guest's disk (briefly paused) into a standalone image and upload it to `image_id`
    through the Image API (reply: Ack)."""

    kind: ClassVar[str] = "snapshot_instance"
    instance_uuid: str
    image_id: str


class RebuildInstance(Message):
    """Agent: a new disk from `instance.image_id`, same identity and ports (reply: InstanceState)."""

    kind: ClassVar[str] = "rebuild_instance"
    instance: InstanceSpec
    power_on: bool = True


class RescueInstance(Message):
    """Agent: boot `rescue_image_id` with the guest's own disk attached second (reply: InstanceState)."""

    kind: ClassVar[str] = "rescue_instance"
    instance: InstanceSpec
    rescue_image_id: str


class UnrescueInstance(Message):
    """Agent: drop the rescue disk and boot the guest normally again (reply: InstanceState)."""

    kind: ClassVar[str] = "unrescue_instance"
    instance_uuid: str


class IncomingReady(Message):
    """The destination of a live migration is ready: where the source's hypervisor migrates to, the folder
    holding the guest's files there, and the address its hypervisor listens on for the memory stream and
    the disk copy (empty: the hypervisor's default, the host's name)."""

    kind: ClassVar[str] = "incoming_ready"
    uri: str
    instances_path: str = ""
    migration_address: str = ""


class LiveMigrate(Message):
    """Source agent: live-migrate the running guest to `dest_host` (block migration, reply: Ack). Progress
    is read with MigrationProgress; AbortMigration cancels it."""

    kind: ClassVar[str] = "live_migrate"
    instance: InstanceSpec
    dest_host: str
    dest_uri: str = ""
    dest: IncomingReady | None = None  # what the destination prepared (schema 2; `dest_uri` alone before)


class MigrationProgress(Message):
    """Source agent: how far a live migration is (call; reply: MigrationStats)."""

    kind: ClassVar[str] = "migration_progress"
    instance_uuid: str


class MigrationStats(Message):
    kind: ClassVar[str] = "migration_stats"
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0


class AbortMigration(Message):
    """Source agent: cancel a running live migration (reply: Ack)."""

    kind: ClassVar[str] = "abort_migration"
    instance_uuid: str


class PrepareLiveMigration(Message):
    """Destination agent: taps and disk files ready for an incoming guest (reply: IncomingReady)."""

    kind: ClassVar[str] = "prepare_live_migration"
    instance: InstanceSpec
    disk: DiskInfo
