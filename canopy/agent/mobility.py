"""The agent's side of resizes, migrations, snapshots, rebuild and rescue: it runs the driver's operation
and, for a disk that moves between hosts, pulls it from the source agent in chunks over the bus (no
shared storage), and uploads snapshots through the Image API (agents never touch the database)."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from canopy.agent.virt.base import DriverError, LiveMigration, Mobility, PowerState
from canopy.rpc.base import Target
from canopy.rpc.calls import InstanceState, StepResult
from canopy.rpc.calls_mobility import (
    AbortMigration,
    ConfirmMigration,
    DiskChunk,
    DiskInfo,
    FinishMigration,
    IncomingReady,
    LiveMigrate,
    MigrateOut,
    MigrationProgress,
    PrepareLiveMigration,
    ReadDisk,
    RebuildInstance,
    RescueInstance,
    RevertMigration,
    SnapshotInstance,
    UnrescueInstance,
)
from canopy.rpc.messages import Ack, Message

if TYPE_CHECKING:
    from canopy.agent.service import Agent

CHUNK = 1 << 20  # 1 MiB a call: small enough for every transport, few calls for a qcow2 overlay
HANDLED = (MigrateOut, ReadDisk, FinishMigration, ConfirmMigration, RevertMigration, SnapshotInstance,
           RebuildInstance, RescueInstance, UnrescueInstance, PrepareLiveMigration, LiveMigrate,
           MigrationProgress, AbortMigration)


def mobility_of(agent: Agent) -> Mobility:
    """The agent's driver's mobility component; DriverError when its driver cannot move guests."""
    if agent.mobility is None:
        raise DriverError(f"the driver of agent {agent.host} cannot resize, move, snapshot or rescue guests")
    return agent.mobility


async def operate(agent: Agent, msg: Message) -> Message | None:
    """Run one mobility operation (the caller checked `isinstance(msg, HANDLED)`)."""
    d = mobility_of(agent)
    if isinstance(msg, MigrateOut):
        return await d.migrate_out(msg.instance_uuid, msg.timeout_s)
    if isinstance(msg, ReadDisk):
        data = await d.read_disk(msg.instance_uuid, msg.offset, msg.length)
        return DiskChunk(data_b64=base64.b64encode(data).decode(), eof=len(data) < msg.length)
    if isinstance(msg, FinishMigration):
        return await _finish(agent, msg)
    if isinstance(msg, ConfirmMigration):
        await d.confirm_migration(msg.instance_uuid)
        return Ack()
    if isinstance(msg, RevertMigration):
        await d.revert_migration(msg.instance_uuid, msg.ports, msg.power_on)
        await agent.net.plug()
        return await _state(agent, msg.instance_uuid, "revert_migration")
    if isinstance(msg, SnapshotInstance):
        await _snapshot(agent, msg)
        return Ack()
    if isinstance(msg, RebuildInstance):
        await d.rebuild(msg.instance, msg.power_on)
        await agent.net.plug()
        return await _state(agent, msg.instance.uuid, "rebuild")
    if isinstance(msg, RescueInstance):
        await d.rescue(msg.instance, msg.rescue_image_id)
        return await _state(agent, msg.instance.uuid, "rescue")
    if isinstance(msg, UnrescueInstance):
        await d.unrescue(msg.instance_uuid)
        return await _state(agent, msg.instance_uuid, "unrescue")
    return await _live(agent, d, msg)


async def _live(agent: Agent, d: LiveMigration, msg: Message) -> Message:
    if isinstance(msg, PrepareLiveMigration):
        ready = await d.prepare_incoming(msg.instance, msg.disk)
        await agent.net.plug()
        return ready
    if isinstance(msg, LiveMigrate):
        await d.live_migrate(msg.instance.uuid, msg.dest or IncomingReady(uri=msg.dest_uri))
        await agent.net.plug()
        return Ack()
    if isinstance(msg, MigrationProgress):
        return await d.migration_stats(msg.instance_uuid)
    if isinstance(msg, AbortMigration):
        await d.abort_migration(msg.instance_uuid)
        return Ack()
    raise ValueError(f"agent {agent.host} does not handle {msg.kind}")


async def _state(agent: Agent, uuid: str, event: str) -> InstanceState:
    power = await agent.driver.power_state(uuid)
    return InstanceState(instance_uuid=uuid, power_state=power,
                         steps=[StepResult(event=event, result="Success", details=agent.host)])


async def _finish(agent: Agent, msg: FinishMigration) -> InstanceState:
    """Pull the disk from the source agent (unless it is this one), then let the driver define the guest."""
    chunks = None if msg.source_host == agent.host else pull_disk(agent, msg.source_host, msg.disk)
    await mobility_of(agent).finish_migration(msg.instance, msg.disk, chunks, msg.power_on)
    await agent.net.plug()
    state = await _state(agent, msg.instance.uuid, "finish_migration")
    if not msg.power_on and state.power_state == PowerState.RUNNING:
        raise DriverError(f"guest {msg.instance.uuid} started though it was stopped before the move")
    return state


async def pull_disk(agent: Agent, source: str, disk: DiskInfo, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """The set-aside disk of `disk.instance_uuid` on `source`, read in chunks over the bus."""
    offset = 0
    while offset < disk.size:
        reply = await agent.bus.call(Target("agent", source), ReadDisk(
            instance_uuid=disk.instance_uuid, offset=offset, length=min(chunk, disk.size - offset)), timeout=120)
        assert isinstance(reply, DiskChunk)
        data = base64.b64decode(reply.data_b64)
        if not data:
            raise DriverError(f"the disk of {disk.instance_uuid} on {source} ended at {offset} of {disk.size} bytes")
        offset += len(data)
        yield data


async def _snapshot(agent: Agent, msg: SnapshotInstance) -> None:
    """Copy the disk to a standalone image in a temporary file and upload it; the file goes either way."""
    uploader = agent.image_uploader
    if uploader is None:
        raise DriverError(f"agent {agent.host} has no Image API client to upload snapshots with")
    # the temporary copy goes next to the guests (their disk has room for it), else the system's temp dir
    with tempfile.TemporaryDirectory(prefix="canopy-snap-", dir=agent.scratch_dir) as tmp:
        path = Path(tmp) / "image"
        disk_format = await mobility_of(agent).snapshot(msg.instance_uuid, path)
        await uploader.upload(msg.image_id, path, disk_format)
