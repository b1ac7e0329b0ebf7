"""Per-project quotas for instances, cores and RAM: limits and usage in one row, so reserving is one
conditional UPDATE that can't race (two boots can't both take the last core)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, Connection, bindparam, insert, or_, select, update

from canopy.config import QuotaDefaults
from canopy.db import tables_global as g

q = g.quota_usage.c
RESOURCES = ("instances", "cores", "ram")


class QuotaExceeded(Exception):
    """A request would take a project over one of its limits; the message names which."""


def class_limits(conn: Connection, class_name: str, defaults: QuotaDefaults) -> QuotaDefaults:
    """A quota class's limits: its row's, each falling back to the configured default."""
    qc = g.quota_classes.c
    row = conn.execute(select(g.quota_classes).where(qc.class_name == class_name)).mappings().first()
    if row is None:
        return defaults
    return QuotaDefaults(**{res: row[res] if row[res] is not None else getattr(defaults, res) for res in RESOURCES})


def set_class_limits(conn: Connection, class_name: str, limits: dict[str, int]) -> None:
    """Change a quota class's limits (those not given keep theirs)."""
    qc = g.quota_classes.c
    if conn.execute(select(qc.class_name).where(qc.class_name == class_name)).first() is None:
        conn.execute(insert(g.quota_classes).values(class_name=class_name))
    if limits:
        conn.execute(update(g.quota_classes).where(qc.class_name == class_name).values(**limits))


def ensure_row(conn: Connection, project_id: str, defaults: QuotaDefaults) -> None:
    """Create the project's quota row with the default limits (the `default` class's) if it has none."""
    if conn.execute(select(q.project_id).where(q.project_id == project_id)).first() is None:
        defaults = class_limits(conn, "default", defaults)
        conn.execute(insert(g.quota_usage).values(
            project_id=project_id, instances_limit=defaults.instances, cores_limit=defaults.cores,
            ram_limit=defaults.ram, instances_used=0, cores_used=0, ram_used=0))


def _reserve_statement() -> Any:
    conds = [q.project_id == bindparam("w_project")]
    values: dict[str, Any] = {}
    for res in RESOURCES:
        used, limit = getattr(q, f"{res}_used"), getattr(q, f"{res}_limit")
        want: BindParameter[int] = bindparam(f"w_{res}")
        conds.append(or_(limit < 0, used + want <= limit))
        values[f"{res}_used"] = used + want
    return update(g.quota_usage).where(*conds).values(**values)


_RESERVE = _reserve_statement()


def reserve(conn: Connection, project_id: str, want: dict[str, int], defaults: QuotaDefaults) -> None:
    """Add `want` ({"instances": n, "cores": n, "ram": n}) to the project's usage, or raise QuotaExceeded."""
    params = {"w_project": project_id, **{f"w_{res}": want[res] for res in RESOURCES}}
    if conn.execute(_RESERVE, params).rowcount == 1:
        return
    row = conn.execute(select(g.quota_usage).where(q.project_id == project_id)).mappings().first()
    if row is None:
        ensure_row(conn, project_id, defaults)
        reserve(conn, project_id, want, defaults)
        return
    over = [res for res in RESOURCES
            if row[f"{res}_limit"] >= 0 and row[f"{res}_used"] + want[res] > row[f"{res}_limit"]]
    detail = ", ".join(f"{res}: requested {want[res]}, already used {row[f'{res}_used']} of "
                       f"{row[f'{res}_limit']}" for res in over)
    raise QuotaExceeded(f"Quota exceeded for {', '.join(over)}: {detail}")


def usage(conn: Connection, project_id: str, defaults: QuotaDefaults) -> dict[str, dict[str, int]]:
    """{resource: {"limit": n, "in_use": n}} for a project (defaults when it has no row yet)."""
    row = conn.execute(select(g.quota_usage).where(q.project_id == project_id)).mappings().first()
    if row is None:
        defaults = class_limits(conn, "default", defaults)
        return {res: {"limit": getattr(defaults, res), "in_use": 0} for res in RESOURCES}
    return {res: {"limit": row[f"{res}_limit"], "in_use": row[f"{res}_used"]} for res in RESOURCES}


def set_limits(conn: Connection, project_id: str, limits: dict[str, int], defaults: QuotaDefaults) -> None:
    """Change a project's limits (the usage stays)."""
    ensure_row(conn, project_id, defaults)
    if limits:
        conn.execute(update(g.quota_usage).where(q.project_id == project_id)
                     .values(**{f"{res}_limit": v for res, v in limits.items()}))
