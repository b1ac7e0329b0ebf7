"""`canopy bus keygen`: a ZeroMQ CURVE key pair for the bus (canopy/rpc/curve.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The ZeroMQ bus: CURVE keys.", no_args_is_help=True)


@app.command()
def keygen(path: Annotated[Path, typer.Argument(help="The key file to write (PATH and PATH.pub, 0600).")]) -> None:
    """Write a new CURVE key pair; print its public key (list it in `[bus] curve_allowed_clients`)."""
    from canopy.rpc.curve import write_keypair

    try:
        public, _ = write_keypair(path)
    except FileExistsError:
        typer.echo(f"{path} exists: not overwritten", err=True)
        raise typer.Exit(1) from None
    typer.echo(public)
