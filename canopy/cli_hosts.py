"""`canopy host`: bring hosts in and take them out (issue 19).

    canopy host enroll --from hosts.csv --cell cell1 [--valid-hours 72] [--out tokens.csv]
        pre-registers the CSV's hosts (name,rack,serial,macs; rack: an id or datacenter/rack-name) as
        `expected` and prints one enrollment token per host (shown once; only hashes are kept)
    canopy host tokens --cell cell1 --count 20
        tokens for self-registration (the agent is matched by serial or MAC, or placed by its rack labels)

An agent then runs `canopy agent --enroll TOKEN --api URL`.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Enroll, drain and retire hosts.", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML configuration file (or CANOPY_CONFIG).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder for the SQLite file, images, secrets.")]
CellOpt = Annotated[str, typer.Option("--cell", help="The cell the hosts join.")]
HoursOpt = Annotated[float, typer.Option("--valid-hours", help="How long each token stays valid.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write host,token lines here (mode 0600), not stdout.")]


def _global_write(config: Path | None, data_dir: Path | None, cell: str, fn: Any, *args: Any) -> Any:
    """Run `fn(conn, now, *args)` in one global transaction; an EnrollmentError ends the command."""
    from canopy.config import load_settings
    from canopy.db.enrollment import EnrollmentError
    from canopy.runtime import open_databases

    if config is not None:
        os.environ["CANOPY_CONFIG"] = str(config)
    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    dbs = open_databases(settings)
    try:
        if cell not in dbs.cells:
            raise EnrollmentError(400, f"Cell {cell} is not known (canopy cell list).")
        with dbs.global_db.writer() as conn:
            return fn(conn, dt.datetime.now(dt.UTC).replace(tzinfo=None), *args)
    except EnrollmentError as e:
        typer.echo(f"canopy host: {e.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        dbs.dispose()


def _write_tokens(pairs: list[tuple[str, str]], out: Path | None) -> None:
    if out is None:
        writer = csv.writer(sys.stdout)
        writer.writerow(["host", "token"])
        writer.writerows(pairs)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["host", "token"])
        writer.writerows(pairs)
    typer.echo(f"{len(pairs)} token(s) written to {out}", err=True)


@app.command("enroll")
def enroll_cmd(source: Annotated[Path, typer.Option("--from", help="CSV: name,rack,serial,macs.")],
               cell: CellOpt, valid_hours: HoursOpt = 72.0, out: OutOpt = None, config: ConfigOpt = None,
               data_dir: DataDirOpt = None) -> None:
    """Pre-register the CSV's hosts and issue one single-use enrollment token each (all or none)."""
    from canopy.db import enrollment as enr

    try:
        rows = enr.parse_hosts_csv(source.read_text())
    except enr.EnrollmentError as e:
        typer.echo(f"canopy host: {e.message}", err=True)
        raise typer.Exit(1) from None

    def write(conn: Any, now: dt.datetime) -> list[tuple[str, str]]:
        names = enr.preregister(conn, rows, now)
        tokens = enr.issue_tokens(conn, cell, list[str | None](names), dt.timedelta(hours=valid_hours), now)
        return list(zip(names, tokens, strict=True))

    _write_tokens(_global_write(config, data_dir, cell, write), out)


@app.command("tokens")
def tokens_cmd(cell: CellOpt, count: Annotated[int, typer.Option("--count", min=1, max=10_000)] = 1,
               valid_hours: HoursOpt = 72.0, out: OutOpt = None, config: ConfigOpt = None,
               data_dir: DataDirOpt = None) -> None:
    """Issue tokens for self-registration (matched by serial or MAC, or placed by rack labels)."""
    from canopy.db import enrollment as enr

    def write(conn: Any, now: dt.datetime) -> list[tuple[str, str]]:
        tokens = enr.issue_tokens(conn, cell, [None] * count, dt.timedelta(hours=valid_hours), now)
        return [("", t) for t in tokens]

    _write_tokens(_global_write(config, data_dir, cell, write), out)


ApiOpt = Annotated[str, typer.Option("--api", envvar="CANOPY_API_URL", help="The api's URL.")]
UserOpt = Annotated[str, typer.Option("--user", envvar="OS_USERNAME", help="An admin user.")]
PasswordOpt = Annotated[str, typer.Option("--password", envvar="OS_PASSWORD", help="Its password.")]
ProjectOpt = Annotated[str, typer.Option("--project", envvar="OS_PROJECT_NAME", help="Its project.")]


async def _admin_client(api: str, user: str, password: str, project: str) -> Any:
    """An httpx client on the api with an admin's token (password auth, default domain)."""
    import httpx

    http = httpx.AsyncClient(base_url=api.rstrip("/"), timeout=60)
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    resp = await http.post("/identity/v3/auth/tokens", json=body)
    if resp.status_code != 201:
        await http.aclose()
        typer.echo(f"canopy host: could not log in as {user}: {resp.status_code} {resp.text[:200]}", err=True)
        raise typer.Exit(1)
    http.headers["X-Auth-Token"] = resp.headers["x-subject-token"]
    return http


@app.command("drain")
def drain_cmd(host: Annotated[str, typer.Argument(help="The host to empty.")],
              live: Annotated[bool, typer.Option("--live", help="Live-migrate ACTIVE servers (else cold).")] = False,
              api: ApiOpt = "http://127.0.0.1:8774", user: UserOpt = "admin", password: PasswordOpt = "admin",
              project: ProjectOpt = "admin") -> None:
    """Disable HOST and move its servers to other hosts (live where possible, else cold), with progress."""
    import asyncio

    from rich.console import Console
    from rich.progress import Progress

    from canopy.drain import DrainError, HostDrainer

    console = Console(stderr=True)

    async def run() -> list[Any]:
        http = await _admin_client(api, user, password, project)
        try:
            drainer = HostDrainer(http)
            total = len(await drainer.servers_on(host))
            with Progress(console=console) as bar:
                task = bar.add_task(f"draining {host}", total=total or 1)
                moves = await drainer.drain(host, live=live, progress=lambda m: bar.advance(task))
                bar.update(task, completed=total or 1)
            return moves
        finally:
            await http.aclose()

    try:
        moves = asyncio.run(run())
    except DrainError as e:
        typer.echo(f"canopy host: {e}", err=True)
        raise typer.Exit(1) from None
    stuck = [m for m in moves if not m.moved]
    for m in moves:
        line = f"{m.server_id} {m.name}: " + (f"{m.how} to {m.to_host}" if m.moved else f"NOT MOVED: {m.error}")
        console.print(line, style=None if m.moved else "red", highlight=False)
    console.print(f"{host}: disabled; {len(moves) - len(stuck)} moved, {len(stuck)} could not move")
    if stuck:
        raise typer.Exit(2)


@app.command("retire")
def retire_cmd(host: Annotated[str, typer.Argument(help="A drained, empty host.")],
               api: ApiOpt = "http://127.0.0.1:8774", user: UserOpt = "admin", password: PasswordOpt = "admin",
               project: ProjectOpt = "admin") -> None:
    """Remove a drained, empty host and its records (refused while it is enabled or holds servers)."""
    import asyncio

    from canopy.drain import DrainError, HostDrainer

    async def run() -> None:
        http = await _admin_client(api, user, password, project)
        try:
            await HostDrainer(http).retire(host)
        finally:
            await http.aclose()

    try:
        asyncio.run(run())
    except DrainError as e:
        typer.echo(f"canopy host: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{host}: retired (service, host row, cell mapping and inventory record removed)")
