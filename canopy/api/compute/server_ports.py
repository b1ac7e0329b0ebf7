"""Booting on ports created beforehand (`networks: [{"port": id}]`), as Nova: the port must be the
project's (an admin may use any) and unbound; the create claims it for the server in the same write as
the instance, so two creates cannot both take it; on the server's deletion it is unbound, not deleted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from canopy.api.errors import ApiError, bad_request
from canopy.context import RequestContext
from canopy.db import tables_cell as c
from canopy.runtime import Cloud

p = c.ports.c


def port_in_use(port_id: str) -> ApiError:
    return ApiError(409, f"Port {port_id} is still in use.")


def _rows(conn: Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(p.id, p.project_id, p.network_id, p.device_id).where(p.id.in_(ids))).mappings()
    return {r["id"]: dict(r) for r in rows}


async def requested_ports(cloud: Cloud, rc: RequestContext, port_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The ports a create names (id → row): 400 when missing or another project's, 409 when bound."""
    if not port_ids:
        return {}
    rows = await cloud.dbs.cell(cloud.cell_name).read_fresh(_rows, port_ids)
    for port_id in port_ids:
        row = rows.get(port_id)
        if row is None or not (rc.is_admin or row["project_id"] == rc.project_id):
            raise bad_request(f"Port id {port_id} could not be found.")
        if row["device_id"]:
            raise port_in_use(port_id)
    return rows


def claim_port(conn: Connection, port_id: str, uuid: str, now: Any) -> None:
    """Make an unbound port the server's (kept when the server goes); 409 if another took it first."""
    claimed = conn.execute(update(c.ports).where(p.id == port_id, p.device_id == "").values(
        device_id=uuid, device_owner="compute:nova", preserve_on_delete=True, updated_at=now))
    if claimed.rowcount != 1:
        raise port_in_use(port_id)
