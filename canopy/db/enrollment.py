"""Enrollment of new hosts (issue 19): pre-registered inventory records, single-use tokens, and the match
of an enrolling agent's hardware report to its record.

    canopy host enroll --from hosts.csv       preregister() + issue_tokens(): one token per expected host
    canopy host tokens --cell C --count N     issue_tokens() unbound: self-registration
    POST /compute/v2.1/canopy-enroll          check_enrollment() (reads only), then the cell's hosts row
                                              (pending), then commit_enrollment() (the token consumed)

A token is 256 random bits shown once; only its SHA-256 is stored. It is bound to one cell, expires, and
is consumed by a conditional update, so two agents racing with one token enroll one host. Errors are
`EnrollmentError(status, message)`, rendered by the API in the compute error shape and printed by the CLI.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import secrets
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from canopy.db import inventory as inv
from canopy.db import tables_cell as c
from canopy.db import tables_global as g

TOKEN_PREFIX = "cnpe_"
MAX_CSV_ROWS = 20_000
CSV_COLUMNS = ("name", "rack", "serial", "macs")  # rack: a rack id, or datacenter/rack-name
_t, _h = g.enrollment_tokens.c, g.inventory_hosts.c


class EnrollmentError(Exception):
    """A refused enrollment step: an HTTP status and a message naming the cause."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    """A fresh random secret (tokens and per-host bus secrets)."""
    return secrets.token_urlsafe(32)


# -- pre-registration from a CSV (pure parse, then one transaction) -------------------------------------


def parse_hosts_csv(text: str) -> list[dict[str, Any]]:
    """Rows of `name,rack,serial,macs` (a header line; macs separated by spaces or ';'), each checked."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [col for col in ("name", "rack") if col not in (reader.fieldnames or [])]
    if missing:
        raise EnrollmentError(400, f"hosts CSV: the header must name the columns {', '.join(CSV_COLUMNS)} "
                                   f"(missing {missing[0]}).")
    rows, seen = [], set()
    for n, raw in enumerate(reader, start=2):
        if n - 1 > MAX_CSV_ROWS:
            raise EnrollmentError(400, f"hosts CSV: more than {MAX_CSV_ROWS} hosts; split the file.")
        try:
            row = {"name": inv.check_host_name("name", (raw.get("name") or "").strip()),
                   "rack": (raw.get("rack") or "").strip(),
                   "serial": inv.check_serial("serial", (raw.get("serial") or "").strip() or None),
                   "macs": inv.check_macs("macs", (raw.get("macs") or "").replace(";", " ").split())}
        except inv.InventoryError as e:
            raise EnrollmentError(400, f"hosts CSV line {n}: {e.message}") from None
        if not row["rack"]:
            raise EnrollmentError(400, f"hosts CSV line {n}: the rack is empty.")
        if row["name"] in seen:
            raise EnrollmentError(400, f"hosts CSV line {n}: host {row['name']} is listed twice.")
        seen.add(row["name"])
        rows.append(row)
    return rows


def _rack_ids(conn: Connection) -> dict[str, str]:
    """Every rack by id and by `datacenter/name`."""
    out: dict[str, str] = {}
    for rid, dc, name in conn.execute(select(g.racks.c.id, g.racks.c.datacenter, g.racks.c.name)):
        out[rid] = out[f"{dc}/{name}"] = rid
    return out


def preregister(conn: Connection, rows: list[dict[str, Any]], now: dt.datetime) -> list[str]:
    """Add the CSV's hosts to the inventory as `expected` (all or none: the caller's transaction); their names."""
    racks = _rack_ids(conn)
    names = [r["name"] for r in rows]
    taken = set(conn.execute(select(_h.name).where(_h.name.in_(names))).scalars()) if names else set()
    serials = [r["serial"] for r in rows if r["serial"]]
    dup_serials = set(conn.execute(select(_h.serial).where(_h.serial.in_(serials))).scalars()) if serials else set()
    values = []
    for r in rows:
        if r["rack"] not in racks:
            raise EnrollmentError(400, f"Host {r['name']}: rack {r['rack']} could not be found "
                                       "(a rack id, or datacenter/rack-name).")
        if r["name"] in taken:
            raise EnrollmentError(409, f"Host {r['name']} is already in the inventory.")
        if r["serial"] in dup_serials:
            raise EnrollmentError(409, f"Host {r['name']}: serial {r['serial']} is already another host's.")
        values.append({"name": r["name"], "rack_id": racks[r["rack"]], "serial": r["serial"], "macs": r["macs"],
                       "state": "expected", "description": "", "created_at": now, "updated_at": now})
    if values:
        conn.execute(insert(g.inventory_hosts), values)
    return names


def issue_tokens(conn: Connection, cell: str, hosts: list[str | None], ttl: dt.timedelta,
                 now: dt.datetime) -> list[str]:
    """One token per entry of `hosts` (a host name, or None for self-registration), for `cell`; the
    tokens themselves, which are not stored and cannot be shown again. (The caller checks that the
    cell is one it knows: the configured cell need not be registered.)"""
    if ttl <= dt.timedelta(0):
        raise EnrollmentError(400, "A token's lifetime must be positive.")
    tokens = [TOKEN_PREFIX + new_secret() for _ in hosts]
    rows = [{"id": str(uuid.uuid4()), "token_hash": hash_token(tok), "cell_name": cell, "host": host,
             "created_at": now, "expires_at": now + ttl} for tok, host in zip(tokens, hosts, strict=True)]
    if rows:
        conn.execute(insert(g.enrollment_tokens), rows)
    return tokens


# -- an enrolling agent's report, matched -----------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What an enrolling agent says about itself (already checked for shape and size by the API)."""

    hostname: str
    serial: str | None
    macs: list[str]
    vcpus: int
    memory_mb: int
    local_gb: int
    hypervisor_type: str
    hypervisor_version: int
    host_ip: str | None = None
    cell: str | None = None  # the cell the agent believes it joins (its config), if it says
    labels: dict[str, str] = field(default_factory=dict)  # datacenter, rack: placement without a record
    hardware: dict[str, Any] = field(default_factory=dict)  # the whole report, kept on the record


@dataclass(frozen=True)
class Match:
    """Where an enrollment lands: the token, the inventory record (new or pre-registered) and its cell."""

    token_id: str
    cell: str
    host: str
    rack_id: str
    datacenter: str
    rack: str
    new_record: bool
    transport_url: str = ""  # the cell's bus, when registered with one


def check_enrollment(conn: Connection, token: str, report: Report, now: dt.datetime) -> Match:
    """Everything about an enrollment that can be refused, checked without writing anything."""
    row = conn.execute(select(g.enrollment_tokens).where(_t.token_hash == hash_token(token))).mappings().first()
    if row is None:
        raise EnrollmentError(401, "The enrollment token is not valid.")
    if row["used_at"] is not None:
        raise EnrollmentError(409, f"The enrollment token was already used (by host {row['used_by']} at "
                                   f"{row['used_at']:%Y-%m-%dT%H:%M:%SZ}); ask for a new one.")
    if row["expires_at"] <= now:
        raise EnrollmentError(401, f"The enrollment token expired at {row['expires_at']:%Y-%m-%dT%H:%M:%SZ}; "
                                   "ask for a new one.")
    if report.cell and report.cell != row["cell_name"]:
        raise EnrollmentError(409, f"The enrollment token is for cell {row['cell_name']}, not cell {report.cell} "
                                   "this agent is configured for.")
    match = _match(conn, row, report)
    owner = conn.execute(select(g.datacenters.c.cell_name).where(g.datacenters.c.name == match.datacenter)).scalar()
    if owner and owner != row["cell_name"]:
        raise EnrollmentError(409, f"The enrollment token is for cell {row['cell_name']}, but host {match.host}'s "
                                   f"rack {match.rack} is in datacenter {match.datacenter}, run by cell {owner}.")
    url = conn.execute(select(g.cells.c.transport_url).where(g.cells.c.name == row["cell_name"])).scalar()
    return replace(match, transport_url=url or "")


def _match(conn: Connection, token: Any, report: Report) -> Match:
    """The inventory record the report is for: the token's host, else by serial, else by MAC, else a new
    record in the rack its labels name."""
    if token["host"] is not None:
        rec = conn.execute(select(g.inventory_hosts).where(_h.name == token["host"])).mappings().first()
        if rec is None or rec["state"] != "expected":
            raise EnrollmentError(409, f"Host {token['host']} is no longer expected "
                                       f"(state {rec['state'] if rec else 'deleted'}).")
        if not _same_machine(rec, report):
            raise EnrollmentError(409, f"This machine (serial {report.serial}, MACs {', '.join(report.macs)}) is not "
                                       f"host {rec['name']}, which the token was issued for.")
        return _placed(conn, token, rec["name"], rec["rack_id"], new=False)
    rec = _find_expected(conn, report)
    if rec is not None:
        return _placed(conn, token, rec["name"], rec["rack_id"], new=False)
    dc, rack = report.labels.get("datacenter"), report.labels.get("rack")
    if not dc or not rack:
        raise EnrollmentError(409, f"No expected host has serial {report.serial} or one of the MACs "
                                   f"{', '.join(report.macs) or '(none)'}, and the agent gave no datacenter and rack "
                                   "labels to place it by.")
    rack_id = conn.execute(select(g.racks.c.id).where(g.racks.c.datacenter == dc, g.racks.c.name == rack)).scalar()
    if rack_id is None:
        raise EnrollmentError(409, f"Rack {rack} of datacenter {dc} (the agent's labels) could not be found.")
    if conn.execute(select(_h.name).where(_h.name == report.hostname)).first():
        raise EnrollmentError(409, f"Host {report.hostname} is already in the inventory.")
    return _placed(conn, token, report.hostname, rack_id, new=True)


def _same_machine(rec: Any, report: Report) -> bool:
    if not rec["serial"] and not rec["macs"]:
        return True  # pre-registered by name and rack only
    return bool(rec["serial"] and rec["serial"] == report.serial) or bool(set(rec["macs"] or []) & set(report.macs))


def _find_expected(conn: Connection, report: Report) -> Any | None:
    if report.serial:
        rec = conn.execute(select(g.inventory_hosts).where(_h.serial == report.serial)).mappings().first()
        if rec is not None:
            if rec["state"] != "expected":
                raise EnrollmentError(409, f"Serial {report.serial} is host {rec['name']}'s, already {rec['state']}.")
            return rec
    if report.macs:
        # Only the expected hosts (a day's worth, by the state index) are searched for a MAC.
        wanted = set(report.macs)
        for rec in conn.execute(select(g.inventory_hosts).where(_h.state == "expected")).mappings():
            if wanted & set(rec["macs"] or []):
                return rec
    return None


def _placed(conn: Connection, token: Any, host: str, rack_id: str, *, new: bool) -> Match:
    dc, rack = conn.execute(select(g.racks.c.datacenter, g.racks.c.name).where(g.racks.c.id == rack_id)).one()
    return Match(token_id=token["id"], cell=token["cell_name"], host=host, rack_id=rack_id, datacenter=dc,
                 rack=rack, new_record=new)


# -- the writes -----------------------------------------------------------------------------------------


def write_cell_host(conn: Connection, m: Match, report: Report, now: dt.datetime) -> bool:
    """The host's row in its cell, `pending` (never schedulable before its health checks pass); whether
    it was created (a compensating delete removes only what this enrollment made)."""
    values = {"hypervisor_type": report.hypervisor_type, "hypervisor_version": report.hypervisor_version,
              "host_ip": report.host_ip, "vcpus": report.vcpus, "memory_mb": report.memory_mb,
              "local_gb": report.local_gb, "datacenter": m.datacenter, "rack": m.rack, "enrollment": "pending",
              "updated_at": now}
    if conn.execute(update(c.hosts).where(c.hosts.c.name == m.host).values(**values)).rowcount:
        return False
    conn.execute(insert(c.hosts).values(name=m.host, uuid=str(uuid.uuid4()), created_at=now, **values))
    return True


def remove_cell_host(conn: Connection, host: str) -> None:
    """Undo write_cell_host after the token was lost to a race."""
    conn.execute(delete(c.hosts).where(c.hosts.c.name == host, c.hosts.c.enrollment == "pending"))


def commit_enrollment(conn: Connection, m: Match, report: Report, credential_hash: str, now: dt.datetime) -> None:
    """Consume the token (conditionally: one winner), record the host as enrolled, and map it to its cell."""
    used = conn.execute(update(g.enrollment_tokens).where(
        _t.id == m.token_id, _t.used_at.is_(None), _t.expires_at > now).values(used_at=now, used_by=m.host))
    if used.rowcount != 1:
        raise EnrollmentError(409, "The enrollment token was used or expired meanwhile; ask for a new one.")
    values = {"state": "enrolled", "hardware": report.hardware, "enrolled_at": now,
              "credential_hash": credential_hash, "updated_at": now}
    if m.new_record:
        conn.execute(insert(g.inventory_hosts).values(
            name=m.host, rack_id=m.rack_id, serial=report.serial, macs=report.macs, description="",
            created_at=now, **values))
    else:
        conn.execute(update(g.inventory_hosts).where(_h.name == m.host).values(**values))
    hm = g.host_mappings.c
    if conn.execute(update(g.host_mappings).where(hm.host == m.host).values(cell_name=m.cell)).rowcount == 0:
        conn.execute(insert(g.host_mappings).values(host=m.host, cell_name=m.cell))


def complete_enrollments(conn: Connection, healthy: list[str], now: dt.datetime) -> list[str]:
    """Hosts still `pending` whose agent just reported every health check passing become `complete`
    (schedulable); their names. One indexed read of the few pending hosts, whatever the fleet's size."""
    h = c.hosts.c
    pending = set(conn.execute(select(h.name).where(h.enrollment == "pending")).scalars())
    done = sorted(pending.intersection(healthy))
    if done:
        conn.execute(update(c.hosts).where(h.name.in_(done), h.enrollment == "pending")
                     .values(enrollment="complete", updated_at=now))
    return done
