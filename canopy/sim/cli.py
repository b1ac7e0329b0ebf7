"""`canopy sim`: run a simulation, sweep fleet sizes and fit how each cost grows, plan a deployment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The scale simulator: real control plane, thousands of real agents, a real bus.",
                  no_args_is_help=True)


@app.command("run")
def run(
    hosts: Annotated[int, typer.Option(help="Simulated hypervisors (one real agent each).")] = 200,
    profile: Annotated[str, typer.Option(help="Workload: enroll, churn, storm, faults, or a TOML file.")] = "churn",
    duration: Annotated[float, typer.Option(help="Seconds of offered load.")] = 30.0,
    report: Annotated[Path, typer.Option(help="Folder for report.json, report.html and the run's files.")] = Path(
        "sim-report"),
    api: Annotated[int, typer.Option(help="api processes.")] = 1,
    schedulers: Annotated[int, typer.Option(help="scheduler processes.")] = 1,
    conductors: Annotated[int, typer.Option(help="conductor processes.")] = 1,
    agent_procs: Annotated[int, typer.Option(help="Processes the agents are spread over.")] = 2,
    db: Annotated[str, typer.Option(help="Database URL; a server URL without a database gets one made and "
                                         "dropped for the run (default: SQLite).")] = "",
    bus: Annotated[str, typer.Option(help="zmq, nats or amqp.")] = "zmq",
    dcs: Annotated[int, typer.Option(help="Data centers.")] = 1,
    racks_per_dc: Annotated[int, typer.Option(help="Racks per data center.")] = 10,
    network: Annotated[str, typer.Option(help="flat (per-rack segments: not yet).")] = "flat",
    rate: Annotated[float | None, typer.Option(help="Boots offered per second (0: as fast as it goes).")] = None,
    spawn_delay: Annotated[float, typer.Option(help="The fake driver's spawn time, s.")] = 0.2,
) -> None:
    """Start the cloud, drive the workload, check the invariants, write the report."""
    from canopy.sim.control import Layout
    from canopy.sim.profile import load_profile
    from canopy.sim.run import simulate

    if network != "flat":
        raise typer.BadParameter("only --network flat is simulated so far", param_hint="--network")
    if bus not in ("zmq", "nats", "amqp"):
        raise typer.BadParameter("one of zmq, nats, amqp", param_hint="--bus")
    layout = Layout(hosts=hosts, api=api, schedulers=schedulers, conductors=conductors, agent_procs=agent_procs,
                    db=db, bus=bus, dcs=dcs, racks_per_dc=racks_per_dc, spawn_delay_s=spawn_delay)
    result = simulate(layout, load_profile(profile).with_rate(rate), duration, report)
    keys = ("hosts", "agents_held", "boots", "boots_per_s", "create_to_active_p50_ms", "create_to_active_p99_ms",
            "control_cpu_ms_per_boot", "agent_memory_kib", "db_queries_per_s", "bus_msgs_per_s", "invariants_ok")
    typer.echo(json.dumps({k: result.get(k) for k in keys}))
    if not result["invariants_ok"]:
        raise typer.Exit(1)


@app.command("sweep")
def sweep(
    hosts: Annotated[str, typer.Option(help="Fleet sizes, comma-separated.")] = "200,500,1000",
    rates: Annotated[str, typer.Option(help="Offered boot rates, comma-separated (at the largest fleet).")] = "",
    profile: Annotated[str, typer.Option(help="Workload.")] = "churn",
    duration: Annotated[float, typer.Option(help="Seconds of offered load per run.")] = 30.0,
    report: Annotated[Path, typer.Option(help="Folder for each run's report and the fitted models.")] = Path(
        "sim-sweep"),
    agent_procs: Annotated[int, typer.Option(help="Agent processes per run.")] = 2,
    db: Annotated[str, typer.Option(help="Database URL (as for run).")] = "",
) -> None:
    """Run the workload at several fleet sizes (and rates), fit each cost's growth, write models.json."""
    from canopy.sim.fit import run_sweep

    models = run_sweep([int(h) for h in hosts.split(",")], [float(r) for r in rates.split(",") if r], profile,
                       duration, report, agent_procs=agent_procs, db=db)
    typer.echo(json.dumps({k: m["model"] for k, m in models["models"].items()}, indent=1))


@app.command("plan")
def plan(
    hosts: Annotated[int, typer.Option(help="Fleet size to plan for.")] = 50_000,
    boots_per_min: Annotated[float, typer.Option("--boots-per-min", help="Boots per minute to plan for.")] = 600,
    models: Annotated[Path, typer.Option(help="models.json written by `canopy sim sweep`.")] = Path(
        "sim-sweep/models.json"),
) -> None:
    """How many api, scheduler and conductor processes, what database and bus rates, from a sweep's models."""
    from canopy.sim.fit import plan_for

    for line in plan_for(json.loads(models.read_text()), hosts, boots_per_min / 60):
        typer.echo(line)
