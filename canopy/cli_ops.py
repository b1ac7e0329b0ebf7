"""Operator commands: `canopy trace REQUEST_ID` and `canopy service ping HOST`.

    canopy trace req-5b6c…  --log /var/log/canopy/          # one request's lines, every service, in time order
    canopy service ping hv-0042 --count 3                  # a live round trip to that host's agent
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from canopy.config import Settings, load_settings

ops_app = typer.Typer(add_completion=False)
service_app = typer.Typer(help="Services: live checks.", no_args_is_help=True)
ops_app.add_typer(service_app, name="service")
console = Console(highlight=False, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML configuration file (or CANOPY_CONFIG).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Canopy's data folder.")]


def _settings(config: Path | None, data_dir: Path | None) -> Settings:
    if config is not None:
        os.environ["CANOPY_CONFIG"] = str(config)
    return load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))


def default_log_paths(settings: Settings) -> list[Path]:
    """Where the services write their JSON logs by default: the configured file's folder, and data_dir/logs."""
    paths = []
    if settings.observability.log_file:
        paths.append(Path(settings.observability.log_file).parent)
    paths.append(settings.data_dir / "logs")
    return [p for p in paths if p.exists()]


@ops_app.command("trace")
def trace(
    request_id: Annotated[str, typer.Argument(help="A request ID (req-…) or a global request ID.")],
    log: Annotated[list[Path] | None, typer.Option("--log", help="A log file or folder (repeatable).")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print one request's log lines from every service's JSON logs, in time order."""
    from canopy.observability.trace import format_entry, gather

    paths = list(log or []) or default_log_paths(_settings(config, data_dir))
    if not paths:
        console.print("[red]no log files: pass --log FILE_OR_FOLDER[/red]")
        raise typer.Exit(2)
    entries = gather(paths, request_id)
    if not entries:
        console.print(f"[yellow]no lines for {request_id} in {', '.join(str(p) for p in paths)}[/yellow]")
        raise typer.Exit(1)
    services = sorted({f"{e.get('service') or '?'}@{e.get('host') or '?'}" for e in entries})
    console.print(f"[bold]{request_id}[/bold]: {len(entries)} lines from {', '.join(services)}")
    for entry in entries:
        typer.echo(format_entry(entry))


async def ping_host(settings: Settings, host: str, count: int, timeout: float) -> list[str]:
    """Ping a host's agent through a conductor `count` times; one line per answer (raises on failure)."""
    from canopy.rpc.base import Target
    from canopy.rpc.calls import Ping, Pong
    from canopy.rpc.factory import make_transport

    bus = make_transport(settings.bus, bind=False)
    await bus.start()
    lines = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            reply = await bus.call(Target("conductor"), Ping(host=host), timeout=timeout)
            total = (time.perf_counter() - t0) * 1000
            assert isinstance(reply, Pong)
            leg = "" if reply.relay_ms is None else f"; conductor {reply.relayed_by} → agent {reply.relay_ms:.2f} ms"
            lines.append(f"{reply.binary} on {reply.host}: version {reply.service_version}, "
                         f"round trip {total:.2f} ms{leg}, up {reply.uptime_s:.0f}s")
    finally:
        await bus.close()
    return lines


@service_app.command("ping")
def ping(
    host: Annotated[str, typer.Argument(help="The agent's host name (as os-services shows it).")],
    count: Annotated[int, typer.Option(help="How many round trips.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 5.0,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """A live round trip to one agent over the bus: its latency and version."""
    settings = _settings(config, data_dir)
    if settings.bus.transport == "local":
        console.print("[red]the in-process bus lives inside the all-in-one and cannot be reached from here; "
                      "ping needs a network bus (bus.transport = \"zmq\")[/red]")
        raise typer.Exit(2)
    try:
        for line in asyncio.run(ping_host(settings, host, count, timeout)):
            typer.echo(line)
    except Exception as exc:
        console.print(f"[red]{host} did not answer: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None
