"""Port bindings (cell tables): the OpenFlow port number a bound port has on its host.

A new binding takes one more than the host's highest number, in the INSERT itself; on MariaDB and
PostgreSQL the binders of one host take a named lock first (SQLite's writers are serialized anyway, so
a boot there costs one statement). The unique key (host, ofport) stays the last word. Past the top of
OpenFlow's range the smallest free number is taken.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, func, insert, literal, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from canopy.db import tables_cell as c
from canopy.network.errors import NetworkError

FIRST_OFPORT = 100  # tables.FIRST_VM_OFPORT: the agent's layout reserves what is below
MAX_OFPORT = 65279


class NoFreeOfport(NetworkError):
    """A host with every OpenFlow port number in use."""

    status = 409


def bind(conn: Connection, port_id: str, host: str, *, rebind: bool = False) -> int:
    """Bind a port to a host with a new OpenFlow number (`rebind`: replacing the binding it has); the number."""
    if rebind:
        unbind(conn, port_id)
    take_lock(conn, f"host:{host}")  # the host's binders in turn: the highest number read is the highest
    return _insert_next(conn, port_id, host)


def take_lock(conn: Connection, name: str) -> None:
    """Hold a named lock until the transaction ends (a no-op on SQLite, whose writers are serialized).

    An upsert, not INSERT IGNORE then SELECT FOR UPDATE: that pair has every waiter hold a shared lock
    it then wants to upgrade, which deadlocks MariaDB."""
    dialect = conn.dialect.name
    table = c.network_locks
    if dialect == "sqlite":
        return
    if dialect == "postgresql":
        stmt: Any = pg_insert(table).values(name=name).on_conflict_do_update(index_elements=["name"],
                                                                           set_={"name": name})
    else:
        stmt = mysql_insert(table).values(name=name).on_duplicate_key_update(name=name)
    conn.execute(stmt)


def _insert_next(conn: Connection, port_id: str, host: str) -> int:
    b = c.port_bindings
    top = func.coalesce(func.max(b.c.ofport), FIRST_OFPORT - 1)
    # Inserts nothing once the top of the range is reached; then the smallest free number is taken.
    below = (select(literal(port_id), literal(host), top + 1).where(b.c.host == host)
             .having(top < MAX_OFPORT))
    stmt = insert(b).from_select(["port_id", "host", "ofport"], below).returning(b.c.ofport)
    number = conn.execute(stmt).scalar()
    if number is None:
        number = _smallest_free(conn, host)
        conn.execute(insert(b).values(port_id=port_id, host=host, ofport=number))
    return int(number)


def _smallest_free(conn: Connection, host: str) -> int:
    b = c.port_bindings.c
    used = set(conn.execute(select(b.ofport).where(b.host == host)).scalars())
    for number in range(FIRST_OFPORT, MAX_OFPORT + 1):
        if number not in used:
            return number
    raise NoFreeOfport(f"Host {host} has no free OpenFlow port number left.")


def unbind(conn: Connection, port_id: str) -> None:
    """Forget a port's binding (its number is free)."""
    conn.execute(delete(c.port_bindings).where(c.port_bindings.c.port_id == port_id))


def ofports_of(conn: Connection, port_ids: list[str]) -> dict[str, tuple[str, int]]:
    """port id -> (host, OpenFlow number) of the bound ones among them."""
    from canopy.network.port_views import chunks

    b = c.port_bindings.c
    out: dict[str, tuple[str, int]] = {}
    for part in chunks(port_ids):
        for port_id, host, ofport in conn.execute(select(b.port_id, b.host, b.ofport).where(b.port_id.in_(part))):
            out[port_id] = (host, ofport)
    return out
