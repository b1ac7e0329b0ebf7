"""`canopy cell`: register a cell's database and bus in the global database, list and show them.

    canopy cell create cell2 --database-url mysql://canopy:secret@db-dc2.example/canopy_cell2 \
        --transport-url zmq://control-dc2.example:7100
    canopy cell list
    canopy cell show cell2 --json

`create` migrates the cell's tables first (so a cell is never registered with an unreachable or empty
database), then registers it; the api and `canopy db upgrade` open every registered cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Cells: each data center's database and bus.", no_args_is_help=True)
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML configuration file (or CANOPY_CONFIG).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder for the SQLite file, images, secrets.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _databases(config: Path | None, data_dir: Path | None) -> Any:
    from canopy.config import load_settings
    from canopy.runtime import open_databases

    if config is not None:
        os.environ["CANOPY_CONFIG"] = str(config)
    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    return settings, open_databases(settings)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"canopy cell: {message}", err=True)
    return typer.Exit(1)


@app.command("create")
def create(name: str,
           database_url: Annotated[str, typer.Option("--database-url", help="The cell's database (primary).")],
           transport_url: Annotated[str, typer.Option("--transport-url", help="The cell's bus.")] = "",
           config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Migrate a cell's database and register it with its bus."""
    from sqlalchemy import exc as sa_exc

    from canopy.clock import Clock
    from canopy.db.cells import CellError, check_cell, register_cell
    from canopy.db.engine import make_engine
    from canopy.db.migrate import upgrade_part

    settings, dbs = _databases(config, data_dir)
    try:
        check_cell(name, database_url, transport_url)
        if name == settings.database.cell_name:
            raise CellError(409, f"Cell {name} is the configured cell of this deployment.")
        engine = make_engine(database_url)
        try:
            upgrade_part(engine, "cell")
        except sa_exc.OperationalError as e:
            raise CellError(400, f"Cell {name}'s database is unreachable: {e.orig}") from None
        finally:
            engine.dispose()
        with dbs.global_db.writer() as conn:
            register_cell(conn, name, database_url, transport_url, Clock().now())
    except CellError as e:
        raise _fail(e.message) from None
    finally:
        dbs.dispose()
    console.print(f"cell {name} registered")


@app.command("list")
def list_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Every cell: the configured one and the registered ones."""
    from canopy.db.cells import list_cells

    settings, dbs = _databases(config, data_dir)
    try:
        with dbs.global_db.reader() as conn:
            rows = [_plain(r) for r in list_cells(conn)]
    finally:
        dbs.dispose()
    db = settings.database
    if db.cell_name not in {r["name"] for r in rows}:
        rows.insert(0, {"name": db.cell_name, "database_url": _hide(db.cell_url),
                        "transport_url": settings.bus.transport, "created_at": None, "configured": True})
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table("name", "database", "bus")
    for r in rows:
        table.add_row(r["name"], _hide(r["database_url"]), r["transport_url"])
    console.print(table)


@app.command("show")
def show(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """One registered cell."""
    from canopy.db.cells import CellError, get_cell

    _, dbs = _databases(config, data_dir)
    try:
        with dbs.global_db.reader() as conn:
            row = _plain(get_cell(conn, name))
    except CellError as e:
        raise _fail(e.message) from None
    finally:
        dbs.dispose()
    row["database_url"] = _hide(row["database_url"])
    if as_json:
        typer.echo(json.dumps(row, indent=1))
    else:
        for key, value in row.items():
            console.print(f"{key}: {value}")


def _hide(url: str) -> str:
    """A URL with its password masked, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - print what we have when it does not parse
        return url


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k): (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
