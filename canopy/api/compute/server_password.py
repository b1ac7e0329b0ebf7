"""os-server-password: the password the guest posted (encrypted with the server's key), read and cleared
by the server's owner. Canopy has no metadata service for the guest to post one yet, so it reads ""
until then, as a Nova server that never posted one."""

from __future__ import annotations

from sqlalchemy import Connection, update
from starlette.requests import Request
from starlette.responses import Response

from canopy.api.compute.common import cell_db, cloud_of, load_visible_instance
from canopy.api.http import ctx, empty_response, json_response, route
from canopy.db import tables_cell as c


async def show_password(request: Request) -> Response:
    """GET: {"password": the encrypted password, or ""}."""
    uuid, rc = request.path_params["server_id"], ctx(request)
    inst = await cell_db(request).read(load_visible_instance, uuid, rc.project_id, rc.is_admin)
    return json_response({"password": inst["server_password"] or ""})


async def clear_password(request: Request) -> Response:
    """DELETE: forget the posted password (the guest keeps its own)."""
    uuid, rc, now = request.path_params["server_id"], ctx(request), cloud_of(request).clock.now()

    def write(conn: Connection) -> None:
        load_visible_instance(conn, uuid, rc.project_id, rc.is_admin)
        conn.execute(update(c.instances).where(c.instances.c.uuid == uuid)
                     .values(server_password=None, updated_at=now))

    await cell_db(request).write(write)
    return empty_response(204)


ROUTES = [
    route("/v2.1/servers/{server_id}/os-server-password", show_password, ["GET"], "compute:server_password:show"),
    route("/v2.1/servers/{server_id}/os-server-password", clear_password, ["DELETE"],
          "compute:server_password:clear"),
]
