"""`canopy scheduler-explain`: where would a server go, and why would every other host say no?

A separate command, because `canopy scheduler` already starts the scheduler service. It loads the
fleet from the database into a fresh index (as a scheduler does when it starts), runs the same filter
chain and weighers for a hypothetical request, and prints the explanation; nothing is claimed. The API
extension `POST /compute/v2.1/canopy-scheduler/explain` asks the running scheduler the same question.

    canopy scheduler-explain --flavor m1.large --zone az-east --project demo-project-id
    canopy scheduler-explain --vcpus 64 --ram 262144 --disk 100 --json
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Explain a placement without making it.", add_completion=False)
console = Console()


def _flavor(conn: Any, ref: str) -> dict[str, Any] | None:
    from sqlalchemy import or_, select

    from canopy.db import tables_global as g

    f = g.flavors.c
    row = conn.execute(select(g.flavors).where(or_(f.id == ref, f.name == ref))).mappings().first()
    return dict(row) if row else None


def _image_properties(conn: Any, image_id: str) -> dict[str, Any]:
    from sqlalchemy import select

    from canopy.db import tables_global as g

    row = conn.execute(select(g.images.c.properties).where(g.images.c.id == image_id)).first()
    if row is None:
        raise typer.BadParameter(f"image {image_id} not found", param_hint="--image")
    return dict(row[0] or {})


def _group(conn: Any, group_id: str) -> dict[str, Any]:
    from sqlalchemy import select

    from canopy.db import tables_global as g

    s = g.server_groups.c
    row = conn.execute(select(s.uuid, s.policy, s.rules).where(s.uuid == group_id)).first()
    if row is None:
        raise typer.BadParameter(f"server group {group_id} not found", param_hint="--group")
    return {"uuid": row.uuid, "policy": row.policy, "rules": row.rules or {}}


async def explain_request(settings: Any, ask: dict[str, Any], top: int) -> dict[str, Any]:
    """Load the fleet from the database and explain one hypothetical request (the command's core)."""
    from canopy.rpc.calls import SelectHost
    from canopy.runtime import open_databases
    from canopy.scheduler.service import Scheduler

    dbs = open_databases(settings)
    try:
        gdb = dbs.global_db
        flavor = await gdb.read(_flavor, ask["flavor"]) if ask.get("flavor") else None
        if ask.get("flavor") and flavor is None:
            raise typer.BadParameter(f"flavor {ask['flavor']} not found", param_hint="--flavor")
        sizes: dict[str, Any] = {"vcpus": ask.get("vcpus"), "memory_mb": ask.get("ram"), "disk_gb": ask.get("disk")}
        if flavor is not None:
            sizes = {"vcpus": flavor["vcpus"], "memory_mb": flavor["ram_mb"], "disk_gb": flavor["disk_gb"]}
        if any(v is None for v in sizes.values()):
            raise typer.BadParameter("give --flavor, or all of --vcpus, --ram and --disk")
        msg = SelectHost(
            instance_uuid="", project_id=ask.get("project") or "", availability_zone=ask.get("zone"),
            force_host=ask.get("host"), network_ids=ask.get("networks") or [],
            image_properties=await gdb.read(_image_properties, ask["image"]) if ask.get("image") else {},
            flavor_extra_specs=(flavor or {}).get("extra_specs") or {},
            group=await gdb.read(_group, ask["group"]) if ask.get("group") else None, **sizes)
        sched = Scheduler(dbs.cell(settings.database.cell_name), None, global_db=gdb, config=settings.scheduler)
        return await sched.explain(msg, top)
    finally:
        dbs.dispose()


@app.callback(invoke_without_command=True)
def explain(
    config: Annotated[Path | None, typer.Option("--config", help="TOML configuration file (or CANOPY_CONFIG).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Folder of the SQLite file.")] = None,
    flavor: Annotated[str | None, typer.Option(help="Flavor name or id.")] = None,
    vcpus: Annotated[int | None, typer.Option(help="vCPUs (without --flavor).")] = None,
    ram: Annotated[int | None, typer.Option(help="RAM in MB (without --flavor).")] = None,
    disk: Annotated[int | None, typer.Option(help="Disk in GB (without --flavor).")] = None,
    zone: Annotated[str | None, typer.Option(help="Availability zone.")] = None,
    host: Annotated[str | None, typer.Option(help="Force this host.")] = None,
    project: Annotated[str | None, typer.Option(help="Project id to ask for (tenant isolation).")] = None,
    image: Annotated[str | None, typer.Option(help="Image id (its properties are filtered on).")] = None,
    network: Annotated[list[str] | None, typer.Option(help="Network id (repeatable).")] = None,
    group: Annotated[str | None, typer.Option(help="Server group id.")] = None,
    top: Annotated[int, typer.Option(help="How many candidates to list.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
) -> None:
    """Say where a server would go and how many hosts each filter removed, without placing it."""
    from canopy.config import load_settings

    if config is not None:
        os.environ["CANOPY_CONFIG"] = str(config)
    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    ask = {"flavor": flavor, "vcpus": vcpus, "ram": ram, "disk": disk, "zone": zone, "host": host,
           "project": project, "image": image, "networks": network, "group": group}
    out = asyncio.run(explain_request(settings, ask, top))
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    _print(out)


def _print(out: dict[str, Any]) -> None:
    table = Table("filter", "removed", "remaining", "why")
    for step in out["filters"]:
        if step["removed"]:
            table.add_row(step["filter"], f"{step['removed']:,}", f"{step['remaining']:,}", step["reason"])
    console.print(table)
    console.print(out["message"])
    for c in out["candidates"]:
        console.print(f"  {c['host']}  score {c['score']}")
