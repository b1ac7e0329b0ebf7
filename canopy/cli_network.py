"""`canopy network`: what a host's flows should be, and why a packet would be dropped there.

    canopy network flows hv-0001 > flows.txt          # ovs-ofctl syntax, with the port numbering as comments
    ovs-ofctl -O OpenFlow13 diff-flows br-int flows.txt   # compare with the switch (or apply by hand)
    canopy network trace hv-0001 'in_port=100,arp,dl_src=...,arp_spa=...,arp_tpa=...'
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from canopy.agent.net.model import Program
    from canopy.agent.net.state import DesiredState

app = typer.Typer(help="Network: a host's compiled flows, and packet traces.", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML configuration file (or CANOPY_CONFIG).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder for the SQLite file, images, secrets.")]


def _program(host: str, config: Path | None, data_dir: Path | None) -> tuple[Program, DesiredState]:
    """The host's desired state from the databases, compiled as its agent compiles it."""
    import logging
    import os

    from canopy.agent.net.compiler import compile_host
    from canopy.agent.net.state import state_of
    from canopy.config import load_settings
    from canopy.network.desired import full_state
    from canopy.runtime import open_databases

    if config is not None:
        os.environ["CANOPY_CONFIG"] = str(config)
    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    logging.basicConfig(level=logging.WARNING)  # stderr: stdout carries the flows
    dbs = open_databases(settings)
    try:
        sync = asyncio.run(full_state(dbs, settings.database.cell_name, host))
    finally:
        dbs.dispose()
    state = state_of(sync, settings.network.uplink_ofports)
    if settings.network.tunnel_ip:
        state.tunnel_ip = settings.network.tunnel_ip
    return compile_host(state.host_state()), state


@app.command("flows")
def flows(
    host: str,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: ports, flows, meters.")] = False,
) -> None:
    """Print the flows HOST's integration bridge should hold, in ovs-ofctl syntax, with the port numbering
    they assume (port UUID, MAC, IPs -> OpenFlow port) as comment lines."""
    from canopy.agent.net import tables as t

    program, state = _program(host, config, data_dir)
    ports: list[dict[str, Any]] = [{"port_id": p.id, "ofport": p.ofport, "tap": t.tap_name(p.id), "mac": p.mac,
              "ips": [*p.ipv4, *p.ipv6], "network_id": p.segment.network_id, "up": p.up} for p in program.ports]
    uplinks = state.uplinks()
    if as_json:
        typer.echo(json.dumps({"host": host, "ports": ports, "uplinks": uplinks, "flows": program.lines(),
                               "meters": program.meter_lines()}, indent=1))
        return
    typer.echo(f"# host {host}: {len(program.flows)} flows, {len(program.meters)} meters, {len(ports)} ports")
    for physnet, ofport in sorted(uplinks.items()):
        typer.echo(f"# uplink {physnet} -> ofport {ofport}")
    if state.tunnel_ip:
        typer.echo(f"# vxlan tunnel from {state.tunnel_ip} -> ofport {t.TUNNEL_OFPORT}")
    for p in ports:
        typer.echo(f"# port {p['port_id']} mac {p['mac']} ips {','.join(p['ips']) or '-'} -> ofport {p['ofport']}"
                   f" ({p['tap']}){'' if p['up'] else ' DOWN'}")
    for line in program.meter_lines():
        typer.echo(f"# meter {line}")
    for line in program.lines():
        typer.echo(line)


@app.command("trace")
def trace(
    host: str,
    packet: Annotated[str, typer.Argument(help="ofproto/trace syntax, e.g. 'in_port=100,ip,dl_src=...,nw_src=...'")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Explain what HOST's flows do with a packet, and why it would be dropped."""
    from canopy.agent.net.fake import FlowSyntaxError
    from canopy.agent.net.trace import explain

    program, _ = _program(host, config, data_dir)
    try:
        typer.echo(explain(program, packet).text())
    except (FlowSyntaxError, ValueError) as exc:
        typer.echo(f"cannot read the packet: {exc}", err=True)
        raise typer.Exit(2) from None
