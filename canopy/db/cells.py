"""The cell registry: each cell's database and bus, in the global `cells` table (Nova's cell mappings).

`canopy cell create` registers a cell; every control process opens the databases of the registered cells
beside the one its settings name (`attach_registered_cells`), so the api lists across them and
`canopy db upgrade` migrates them. The configured cell (`[database] cell_name`/`cell_url`) need not be
registered: it is always there.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from canopy.db import tables_global as g
from canopy.db.engine import Databases

CELL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TRANSPORTS = ("", "local", "zmq", "nats", "amqp", "tcp")


class CellError(Exception):
    """A refused cell registration: an HTTP-like status and a message naming the cause."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_cell(name: str, database_url: str, transport_url: str) -> None:
    """A cell's name, database URL and bus URL, checked before anything is written."""
    if not CELL_NAME_RE.match(name):
        raise CellError(400, f"Invalid cell name {name!r}: 1-64 letters, digits, '_' or '-'.")
    try:
        url = make_url(database_url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises several kinds for a malformed URL
        raise CellError(400, f"Invalid database URL for cell {name}: {database_url!r}.") from None
    if url.get_backend_name() not in ("sqlite", "mysql", "mariadb", "postgresql"):
        raise CellError(400, f"Unsupported database for cell {name}: {url.get_backend_name()!r}.")
    scheme = transport_url.split("://", 1)[0] if transport_url else ""
    if scheme not in TRANSPORTS:
        raise CellError(400, f"Unsupported bus URL for cell {name}: {transport_url!r} "
                             f"(one of {', '.join(t for t in TRANSPORTS if t)}://…).")


def register_cell(conn: Connection, name: str, database_url: str, transport_url: str, now: datetime) -> None:
    """Add a cell to the registry (409 if the name or the database is already one cell's)."""
    check_cell(name, database_url, transport_url)
    c = g.cells.c
    if conn.execute(select(c.name).where(c.name == name)).first():
        raise CellError(409, f"Cell {name} already exists.")
    if conn.execute(select(c.name).where(c.database_url == database_url)).first():
        raise CellError(409, f"Database {database_url} is already another cell's.")
    conn.execute(insert(g.cells).values(name=name, database_url=database_url, transport_url=transport_url,
                                        created_at=now))


def list_cells(conn: Connection) -> list[dict[str, Any]]:
    """Every registered cell, by name."""
    return [dict(r) for r in conn.execute(select(g.cells).order_by(g.cells.c.name)).mappings()]


def get_cell(conn: Connection, name: str) -> dict[str, Any]:
    """One registered cell, or CellError 404."""
    row = conn.execute(select(g.cells).where(g.cells.c.name == name)).mappings().first()
    if row is None:
        raise CellError(404, f"Cell {name} could not be found.")
    return dict(row)


def attach_registered_cells(dbs: Databases) -> list[str]:
    """Open the database of every registered cell not yet open; the names added. A global database
    without the table yet (before `canopy db upgrade`) has none."""
    try:
        with dbs.global_db.reader() as conn:
            rows = list_cells(conn)
    except (sa_exc.OperationalError, sa_exc.ProgrammingError):
        return []
    added = [r["name"] for r in rows if r["name"] not in dbs.cells]
    for row in rows:
        dbs.add_cell(row["name"], row["database_url"])
    return added
