"""Helpers the compute handlers share: the cloud, the cell database, links, and instance lookup."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Connection, select
from starlette.requests import Request

from canopy.api.errors import ApiError
from canopy.api.http import ctx
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.db.engine import Database
from canopy.runtime import Cloud


def cloud_of(request: Request) -> Cloud:
    return request.app.state.cloud


def cell_db(request: Request) -> Database:
    cloud = cloud_of(request)
    return cloud.dbs.cell(cloud.cell_name)


async def instance_db(request: Request, instance_uuid: str) -> Database:
    """The database of the cell an instance lives in (from the global instance mappings; with one cell,
    that cell's without asking). 404 for an instance no cell holds."""
    cloud = cloud_of(request)
    if len(cloud.dbs.cells) == 1:
        return cloud.dbs.cell(cloud.cell_name)
    m = g.instance_mappings.c
    cell = await cloud.dbs.global_db.read_fresh(
        lambda conn: conn.execute(select(m.cell_name).where(m.instance_uuid == instance_uuid)).scalar())
    if cell is None or cell not in cloud.dbs.cells:
        raise instance_not_found(instance_uuid)
    return cloud.dbs.cell(cell)


def link(request: Request, *parts: str) -> list[dict[str, str]]:
    """Nova's self and bookmark links for a resource."""
    base = cloud_of(request).settings.api.public_url.rstrip("/") + "/compute"
    tail = "/".join(parts)
    project = ctx(request).project_id or ""
    return [{"rel": "self", "href": f"{base}/v2.1/{project}/{tail}" if project else f"{base}/v2.1/{tail}"},
            {"rel": "bookmark", "href": f"{base}/{project}/{tail}" if project else f"{base}/{tail}"}]


def instance_not_found(instance_uuid: str) -> ApiError:
    return ApiError(404, f"Instance {instance_uuid} could not be found.")


def load_visible_instance(conn: Connection, instance_uuid: str, project_id: str | None,
                          is_admin: bool) -> dict[str, Any]:
    """The instance if the caller may see it (admins see all; others their project's), else 404."""
    q = select(c.instances).where(c.instances.c.uuid == instance_uuid, c.instances.c.deleted.is_(False))
    row = conn.execute(q).mappings().first()
    if row is None or (not is_admin and row["project_id"] != project_id):
        raise instance_not_found(instance_uuid)
    return dict(row)


def check_unlocked(inst: dict[str, Any], is_admin: bool) -> None:
    """Nova's InstanceIsLocked: a locked server refuses its owner's actions (an admin overrides the lock)."""
    if inst.get("locked") and not is_admin:
        raise ApiError(409, f"Instance {inst['uuid']} is locked")


# Nova's password alphabet: no characters that read alike (0/O, 1/l/I).
_PASSWORD_GROUPS = ("23456789", "ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz")


def generate_password(length: int) -> str:
    """A random admin password with at least one character of each group, as Nova generates them."""
    chars = [secrets.choice(group) for group in _PASSWORD_GROUPS]
    alphabet = "".join(_PASSWORD_GROUPS)
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def admin_password(request: Any, given: str | None) -> str:
    """The admin password a create, rebuild or rescue hands the guest: the one given, else a new one."""
    return given if given else generate_password(cloud_of(request).settings.compute.password_length)


def password_body(request: Any, password: str) -> dict[str, str]:
    """`{"adminPass": …}` for a response, or nothing when the deployment turned it off (Nova's
    enable_instance_password: the guest still gets the password, the response does not show it)."""
    return {"adminPass": password} if cloud_of(request).settings.compute.enable_instance_password else {}
