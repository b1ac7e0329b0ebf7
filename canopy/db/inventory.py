"""The physical inventory: data centers, rows, racks and hosts (global tables), checked and written.

One place for the rules both the admin API (`/compute/v2.1/canopy-inventory/…`) and `canopy inventory`
follow: names are short and plain, a row lives in one data center, a rack in one row (and so one data
center), a host in one rack, and a rack is cabled to one network segment. Setting a rack's segment
writes the rack's line of `segment_racks` for that segment's network, the table the scheduler's
reachability and a boot's address choice read; so the rack mapping made through the segments API keeps
working, and the inventory is one more way to write it.

Errors are `InventoryError(status, message)`: the API renders them in the compute error shape, the CLI
prints the message.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Table, delete, func, insert, select, update

from canopy.db import tables_global as g

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
HOST_STATES = ("expected", "enrolled", "draining", "retired")
MAX_MACS = 16


class InventoryError(Exception):
    """A refused inventory request: an HTTP status and a message naming the field or the cause."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def invalid(field: str, value: Any, why: str) -> InventoryError:
    return InventoryError(400, f"Invalid input for field/attribute {field}. Value: {value!r}. {why}")


# -- field checks: each takes the raw value and returns the value to store ------------------------------


def check_name(field: str, value: Any) -> str:
    """A short plain name: letters, digits, '.', '_', '-' (64 at most)."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise invalid(field, value, "It must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                                    "or digit.")
    return value


def check_host_name(field: str, value: Any) -> str:
    """A host name as its agent reports it (255 characters at most)."""
    if not isinstance(value, str) or not HOST_RE.match(value):
        raise invalid(field, value, "It must be 1-255 letters, digits, '.', '_' or '-'.")
    return value


def check_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 255:
        raise invalid(field, value, "It must be a string of at most 255 characters.")
    return value


def check_optional_name(field: str, value: Any) -> str | None:
    return None if value is None else check_name(field, value)


def check_id(field: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 36:
        raise invalid(field, value, "It must be an id of at most 36 characters.")
    return value


def check_optional_id(field: str, value: Any) -> str | None:
    return None if value is None else check_id(field, value)


def check_serial(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        raise invalid(field, value, "It must be 1-64 printable characters.")
    return value


def check_macs(field: str, value: Any) -> list[str]:
    """Expected NIC MACs: a list of at most 16 distinct `aa:bb:cc:dd:ee:ff` (stored lower case)."""
    if not isinstance(value, list) or len(value) > MAX_MACS:
        raise invalid(field, value, f"It must be a list of at most {MAX_MACS} MAC addresses.")
    macs = [m.lower() if isinstance(m, str) else m for m in value]
    bad = [m for m in macs if not isinstance(m, str) or not MAC_RE.match(m)]
    if bad:
        raise invalid(field, bad[0], "It is not a MAC address like 52:54:00:12:34:56.")
    if len(set(macs)) != len(macs):
        raise invalid(field, value, "A MAC address is listed twice.")
    return macs


def check_state(field: str, value: Any) -> str:
    if value not in HOST_STATES:
        raise invalid(field, value, f"It must be one of {', '.join(HOST_STATES)}.")
    return str(value)


@dataclass(frozen=True)
class Kind:
    """One kind of inventory record: its table, key, and the fields a create or an update may set."""

    name: str  # the collection's name in the API: datacenters, rows, racks, hosts
    member: str  # one record's name in bodies and messages
    table: Table
    key: str  # the column that identifies a record in URLs
    required: tuple[str, ...]
    fields: dict[str, Callable[[str, Any], Any]]
    mutable: frozenset[str]
    filters: tuple[str, ...]
    generated_key: bool = False

    @property
    def key_column(self) -> Column[Any]:
        return self.table.c[self.key]


KINDS: dict[str, Kind] = {
    "datacenters": Kind("datacenters", "datacenter", g.datacenters, "name", ("name",),
                        {"name": check_name, "description": check_text, "cell_name": check_optional_name},
                        frozenset({"description", "cell_name"}), ("cell_name",)),
    "rows": Kind("rows", "row", g.datacenter_rows, "id", ("name", "datacenter"),
                 {"name": check_name, "datacenter": check_name, "description": check_text},
                 frozenset({"name", "description"}), ("datacenter", "name"), generated_key=True),
    "racks": Kind("racks", "rack", g.racks, "id", ("name", "row_id"),
                  {"name": check_name, "row_id": check_id, "segment_id": check_optional_id,
                   "description": check_text},
                  frozenset({"name", "row_id", "segment_id", "description"}), ("datacenter", "row_id", "name",
                                                                              "segment_id"),
                  generated_key=True),
    "hosts": Kind("hosts", "host", g.inventory_hosts, "name", ("name", "rack_id"),
                  {"name": check_host_name, "rack_id": check_id, "serial": check_serial, "macs": check_macs,
                   "state": check_state, "description": check_text},
                  frozenset({"rack_id", "serial", "macs", "state", "description"}), ("rack_id", "state", "serial")),
}


def not_found(kind: Kind, key: str) -> InventoryError:
    return InventoryError(404, f"{kind.member.capitalize()} {key} could not be found.")


def parse_body(kind: Kind, body: dict[str, Any], creating: bool) -> dict[str, Any]:
    """The values a create or update body sets, each checked; unknown or immutable fields are refused."""
    allowed = set(kind.fields) if creating else set(kind.mutable)
    extra = sorted(set(body) - allowed)
    if extra:
        raise InventoryError(400, f"Invalid input for field/attribute {kind.member}. Additional properties are "
                                  f"not allowed ('{extra[0]}' was unexpected)")
    missing = [f for f in kind.required if f not in body] if creating else []
    if missing:
        raise InventoryError(400, f"Invalid input for field/attribute {kind.member}. '{missing[0]}' is a "
                                  "required property")
    if not creating and not body:
        raise InventoryError(400, f"Invalid input for field/attribute {kind.member}. Nothing to change.")
    return {f: kind.fields[f](f, v) for f, v in body.items()}


# -- reads ------------------------------------------------------------------------------------------------


def get_record(conn: Connection, kind: Kind, key: str) -> dict[str, Any]:
    """One record, or a 404."""
    row = conn.execute(select(kind.table).where(kind.key_column == key)).mappings().first()
    if row is None:
        raise not_found(kind, key)
    return dict(row)


def list_records(conn: Connection, kind: Kind, filters: dict[str, str], limit: int,
                 marker: str | None) -> list[dict[str, Any]]:
    """Records matching exact-value filters, ordered by key, after `marker` (a key; unknown: 400)."""
    q = select(kind.table).order_by(kind.key_column).limit(limit)
    for field, value in filters.items():
        q = q.where(kind.table.c[field] == value)
    if marker is not None:
        if conn.execute(select(kind.key_column).where(kind.key_column == marker)).first() is None:
            raise InventoryError(400, f"marker [{marker}] not found")
        q = q.where(kind.key_column > marker)
    return [dict(r) for r in conn.execute(q).mappings()]


# -- writes -----------------------------------------------------------------------------------------------


def create_record(conn: Connection, kind: Kind, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A new record after its checks (parents exist, names unique where they must be)."""
    row = {"description": "", **values, "created_at": now, "updated_at": now}
    if kind.generated_key:
        row[kind.key] = str(uuid.uuid4())
    elif conn.execute(select(kind.key_column).where(kind.key_column == row[kind.key])).first():
        raise InventoryError(409, f"{kind.member.capitalize()} {row[kind.key]} already exists.")
    _CHECKS[kind.name](conn, row, None)
    conn.execute(insert(kind.table).values(**row))
    if kind.name == "racks" and row.get("segment_id"):
        cable_rack(conn, row, None)
    return get_record(conn, kind, row[kind.key])


def update_record(conn: Connection, kind: Kind, key: str, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Change some fields of a record after the same checks as a create."""
    before = get_record(conn, kind, key)
    after = {**before, **values}
    _CHECKS[kind.name](conn, after, before)
    conn.execute(update(kind.table).where(kind.key_column == key).values(**values, updated_at=now))
    if kind.name == "racks":
        cable_rack(conn, after, before)
    return get_record(conn, kind, key)


def delete_record(conn: Connection, kind: Kind, key: str) -> None:
    """Remove a record that nothing else refers to (409 while something does)."""
    record = get_record(conn, kind, key)
    children = {"datacenters": (g.datacenter_rows.c.datacenter, "rows"), "rows": (g.racks.c.row_id, "racks"),
                "racks": (g.inventory_hosts.c.rack_id, "hosts")}.get(kind.name)
    if children is not None:
        col, what = children
        n = conn.execute(select(func.count()).where(col == key)).scalar_one()
        if n:
            raise InventoryError(409, f"{kind.member.capitalize()} {key} still holds {n} {what}.")
    if kind.name == "racks":
        cable_rack(conn, {**record, "segment_id": None}, record)
    conn.execute(delete(kind.table).where(kind.key_column == key))


def _check_datacenter(conn: Connection, row: dict[str, Any], before: dict[str, Any] | None) -> None:
    cell = row.get("cell_name")
    if cell and conn.execute(select(g.cells.c.name).where(g.cells.c.name == cell)).first() is None:
        raise InventoryError(400, f"Cell {cell} is not registered (canopy cell create).")


def _check_row(conn: Connection, row: dict[str, Any], before: dict[str, Any] | None) -> None:
    dc = g.datacenters.c
    if conn.execute(select(dc.name).where(dc.name == row["datacenter"])).first() is None:
        raise InventoryError(400, f"Datacenter {row['datacenter']} could not be found.")
    r = g.datacenter_rows.c
    clash = conn.execute(select(r.id).where(r.datacenter == row["datacenter"], r.name == row["name"],
                                            r.id != row.get("id", ""))).first()
    if clash:
        raise InventoryError(409, f"Row {row['name']} already exists in datacenter {row['datacenter']}.")


def _check_rack(conn: Connection, row: dict[str, Any], before: dict[str, Any] | None) -> None:
    r = g.datacenter_rows.c
    parent = conn.execute(select(r.datacenter).where(r.id == row["row_id"])).first()
    if parent is None:
        raise InventoryError(400, f"Row {row['row_id']} could not be found.")
    if before is not None and parent[0] != before["datacenter"]:
        raise InventoryError(409, f"Rack {before['name']} is in datacenter {before['datacenter']}; row "
                                  f"{row['row_id']} is in {parent[0]}. A rack moves between rows of one data center.")
    row["datacenter"] = parent[0]
    k = g.racks.c
    if conn.execute(select(k.id).where(k.datacenter == row["datacenter"], k.name == row["name"],
                                       k.id != row.get("id", ""))).first():
        raise InventoryError(409, f"Rack {row['name']} already exists in datacenter {row['datacenter']}.")
    seg = row.get("segment_id")
    if seg and conn.execute(select(g.network_segments.c.id).where(g.network_segments.c.id == seg)).first() is None:
        raise InventoryError(400, f"Segment {seg} could not be found.")


def _check_host(conn: Connection, row: dict[str, Any], before: dict[str, Any] | None) -> None:
    if conn.execute(select(g.racks.c.id).where(g.racks.c.id == row["rack_id"])).first() is None:
        raise InventoryError(400, f"Rack {row['rack_id']} could not be found.")
    h = g.inventory_hosts.c
    serial = row.get("serial")
    if serial and conn.execute(select(h.name).where(h.serial == serial, h.name != row["name"])).first():
        raise InventoryError(409, f"Serial {serial} is already the serial of another host.")


_CHECKS: dict[str, Callable[[Connection, dict[str, Any], dict[str, Any] | None], None]] = {
    "datacenters": _check_datacenter, "rows": _check_row, "racks": _check_rack, "hosts": _check_host}


def cable_rack(conn: Connection, rack: dict[str, Any], before: dict[str, Any] | None) -> None:
    """Make `segment_racks` say what the rack's cabling says: its old line goes, its segment's line comes.

    A rack is cabled to one segment, so the inventory's word replaces whatever segment of that network
    the rack was mapped to before."""
    sr = g.segment_racks.c
    if before is not None:
        conn.execute(delete(g.segment_racks).where(sr.datacenter == before["datacenter"], sr.rack == before["name"],
                                                   sr.segment_id == before.get("segment_id")))
    seg = rack.get("segment_id")
    if not seg:
        return
    network_id = conn.execute(select(g.network_segments.c.network_id)
                              .where(g.network_segments.c.id == seg)).scalar_one()
    conn.execute(delete(g.segment_racks).where(sr.network_id == network_id, sr.datacenter == rack["datacenter"],
                                               sr.rack == rack["name"]))
    conn.execute(insert(g.segment_racks).values(network_id=network_id, datacenter=rack["datacenter"],
                                                rack=rack["name"], segment_id=seg))


def host_placement(conn: Connection, host: str) -> tuple[str, str] | None:
    """A host's (datacenter, rack name) from the inventory, or None when the inventory does not know it."""
    q = (select(g.racks.c.datacenter, g.racks.c.name)
         .select_from(g.inventory_hosts.join(g.racks, g.racks.c.id == g.inventory_hosts.c.rack_id))
         .where(g.inventory_hosts.c.name == host))
    row = conn.execute(q).first()
    return (row[0], row[1]) if row else None
