"""`canopy inventory`: the physical inventory (data centers, rows, racks, hosts), on the global database.

    canopy inventory create datacenters name=dc1 cell_name=cell1
    canopy inventory create rows name=row-a datacenter=dc1
    canopy inventory create racks name=r01 row_id=ROW_ID segment_id=SEGMENT_ID
    canopy inventory create hosts name=hv-0001 rack_id=RACK_ID serial=SN123 macs=52:54:00:00:00:01,52:54:00:00:00:02
    canopy inventory list racks --filter datacenter=dc1 --limit 50
    canopy inventory set racks RACK_ID segment_id=OTHER_SEGMENT
    canopy inventory show hosts hv-0001 --json
    canopy inventory delete rows ROW_ID

The same checks as the admin API (`/compute/v2.1/canopy-inventory/…`): both call canopy.db.inventory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Physical inventory: data centers, rows, racks, hosts.", no_args_is_help=True)
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML configuration file (or CANOPY_CONFIG).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder for the SQLite file, images, secrets.")]
KindArg = Annotated[str, typer.Argument(help="datacenters, rows, racks or hosts.")]
FieldsArg = Annotated[list[str] | None, typer.Argument(help="field=value pairs (macs: comma-separated).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def parse_fields(pairs: list[str]) -> dict[str, Any]:
    """`field=value` pairs as a body: `macs` splits on commas, an empty value is null."""
    body: dict[str, Any] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise typer.BadParameter(f"{pair!r} is not field=value")
        if field == "macs":
            body[field] = [m for m in value.split(",") if m]
        else:
            body[field] = value if value != "" else None
    return body


def _run(config: Path | None, data_dir: Path | None, write: bool, fn: Any, *args: Any) -> Any:
    """Run one inventory function in a transaction; an InventoryError ends the command with its message."""
    from canopy.config import load_settings
    from canopy.db.inventory import InventoryError
    from canopy.runtime import open_databases

    if config is not None:
        os.environ["CANOPY_CONFIG"] = str(config)
    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    dbs = open_databases(settings)
    try:
        with (dbs.global_db.writer() if write else dbs.global_db.reader()) as conn:
            return fn(conn, *args)
    except InventoryError as e:
        typer.echo(f"canopy inventory: {e.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        dbs.dispose()


def _kind(name: str) -> Any:
    from canopy.db.inventory import KINDS

    if name not in KINDS:
        raise typer.BadParameter(f"{name!r}: one of {', '.join(KINDS)}", param_hint="KIND")
    return KINDS[name]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([_plain(r) for r in rows], indent=1))
        return
    if not rows:
        console.print("(none)")
        return
    table = Table(*[k for k in rows[0] if k not in ("created_at", "updated_at")])
    for row in rows:
        table.add_row(*[str(v) for k, v in row.items() if k not in ("created_at", "updated_at")])
    console.print(table)


@app.command("list")
def list_cmd(kind: KindArg, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             filters: Annotated[list[str] | None, typer.Option("--filter", help="field=value")] = None,
             limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
             marker: Annotated[str | None, typer.Option(help="List after this id.")] = None,
             as_json: JsonOpt = False) -> None:
    """List records of a kind, in id order, a page at a time."""
    from canopy.db import inventory as inv

    k = _kind(kind)
    wanted = {f: str(v) for f, v in parse_fields(filters or []).items()}
    unknown = sorted(set(wanted) - set(k.filters))
    if unknown:
        raise typer.BadParameter(f"{unknown[0]!r} is not a filter of {kind} ({', '.join(k.filters)})")
    _print(_run(config, data_dir, False, inv.list_records, k, wanted, limit, marker), as_json)


@app.command("show")
def show_cmd(kind: KindArg, key: str, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             as_json: JsonOpt = False) -> None:
    """Show one record."""
    from canopy.db import inventory as inv

    _print([_run(config, data_dir, False, inv.get_record, _kind(kind), key)], as_json)


@app.command("create")
def create_cmd(kind: KindArg, fields: FieldsArg = None, config: ConfigOpt = None, data_dir: DataDirOpt = None,
               as_json: JsonOpt = False) -> None:
    """Create a record from field=value pairs."""
    from canopy.clock import Clock
    from canopy.db import inventory as inv

    k = _kind(kind)
    values = _checked(k, parse_fields(fields or []), creating=True)
    _print([_run(config, data_dir, True, inv.create_record, k, values, Clock().now())], as_json)


@app.command("set")
def set_cmd(kind: KindArg, key: str, fields: FieldsArg = None, config: ConfigOpt = None,
            data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Change some fields of a record."""
    from canopy.clock import Clock
    from canopy.db import inventory as inv

    k = _kind(kind)
    values = _checked(k, parse_fields(fields or []), creating=False)
    _print([_run(config, data_dir, True, inv.update_record, k, key, values, Clock().now())], as_json)


@app.command("delete")
def delete_cmd(kind: KindArg, key: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Remove a record that holds nothing."""
    from canopy.db import inventory as inv

    _run(config, data_dir, True, inv.delete_record, _kind(kind), key)
    console.print(f"deleted {kind} {key}")


def _checked(kind: Any, body: dict[str, Any], creating: bool) -> dict[str, Any]:
    from canopy.db.inventory import InventoryError, parse_body

    try:
        return parse_body(kind, body, creating)
    except InventoryError as e:
        typer.echo(f"canopy inventory: {e.message}", err=True)
        raise typer.Exit(1) from None
