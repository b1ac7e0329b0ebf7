"""createBackup: the server's disk uploaded as an image exactly as createImage does (image_backup →
image_pending_upload → image_uploading), then the rotation: of this server's backups of the same
backup_type, the newest `rotation` are kept and the older ones deleted (Nova's _rotate_backups)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from canopy.conductor import shelve, snapshot
from canopy.conductor.taskrun import TaskRun
from canopy.db import tables_global as g

if TYPE_CHECKING:
    from canopy.conductor.env import TaskEnv

log = logging.getLogger("canopy.conductor")
MAX_OWNED_IMAGES = 10000  # a project's images read for a rotation, at most


async def run_backup(env: TaskEnv, run: TaskRun) -> None:
    """Snapshot into the image the API created, then rotate this server's backups of its type."""
    await snapshot.run_snapshot(env, run)
    if run.args.backup_type is not None and run.args.rotation is not None:
        await rotate_backups(env, run.instance_uuid, run.args.backup_type, run.args.rotation)


def backups_of(conn: Connection, project_id: str, instance_uuid: str, backup_type: str) -> list[dict[str, Any]]:
    """The server's backups of one type, newest first."""
    i = g.images.c
    rows = conn.execute(select(i.id, i.properties, i.created_at).where(i.owner == project_id)
                        .order_by(i.created_at.desc(), i.id.desc()).limit(MAX_OWNED_IMAGES)).mappings()
    return [dict(r) for r in rows
            if (r["properties"] or {}).get("instance_uuid") == instance_uuid
            and (r["properties"] or {}).get("image_type") == "backup"
            and (r["properties"] or {}).get("backup_type") == backup_type]


async def rotate_backups(env: TaskEnv, instance_uuid: str, backup_type: str, rotation: int) -> list[str]:
    """Delete the server's backups of `backup_type` beyond the newest `rotation`; the ids deleted."""
    from canopy.conductor import records

    inst = await env.db.read_fresh(records.load_instance, instance_uuid)
    if inst is None:
        return []
    found = await env.dbs.global_db.read_fresh(backups_of, inst["project_id"], instance_uuid, backup_type)
    doomed = [b["id"] for b in found[rotation:]]
    for image_id in doomed:
        await shelve.delete_image(env, image_id)
    if doomed:
        log.info("instance %s: rotated out %d %s backup(s)", instance_uuid, len(doomed), backup_type)
    return doomed
