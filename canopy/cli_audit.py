"""`canopy audit export`: the audit trail as CADF events, one JSON object a line (canopy/api/audit.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The audit trail of mutating API calls.", no_args_is_help=True)


@app.command()
def export(
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time, e.g. 2026-12-08T00:00:00Z.")] = None,
    project_id: Annotated[str | None, typer.Option("--project-id", help="Only this project's calls.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The data folder.")] = None,
) -> None:
    """Write audit records from `--since` on as CADF JSON lines to stdout, oldest first."""
    from canopy.api.audit import list_records, to_cadf
    from canopy.api.identity.audit_routes import parse_since
    from canopy.config import load_settings
    from canopy.runtime import open_databases

    if config is not None:
        os.environ["CANOPY_CONFIG"] = str(config)
    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    dbs = open_databases(settings)
    try:
        start = parse_since(since)
    except Exception as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    marker: str | None = None
    try:
        while True:  # in pages, so a long trail streams in bounded memory
            with dbs.global_db.reader() as conn:
                page = list_records(conn, since=start, project_id=project_id, limit=1000, marker=marker)
            for record in page:
                sys.stdout.write(json.dumps(to_cadf(record)) + "\n")
            if len(page) < 1000:
                return
            marker = page[-1].id
    finally:
        dbs.dispose()
