"""The `canopy` command: run each service, or all of them in one process; manage the database."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from canopy.config import Settings, load_settings
from canopy.observability.logs import setup_process

app = typer.Typer(help="Canopy: a cloud control plane for hosting providers (OpenStack APIs).",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(__import__("canopy.cli_scheduler", fromlist=["app"]).app, name="scheduler-explain")
app.add_typer(__import__("canopy.cli_ops", fromlist=["ops_app"]).ops_app)  # `canopy trace`, `canopy service ping`
app.add_typer(__import__("canopy.cli_network", fromlist=["app"]).app, name="network")  # flows, trace (issue 4)
app.add_typer(__import__("canopy.sim.cli", fromlist=["app"]).app, name="sim")  # the scale simulator (issue 17)
app.add_typer(__import__("canopy.cli_inventory", fromlist=["app"]).app, name="inventory")  # issue 19
app.add_typer(__import__("canopy.cli_cells", fromlist=["app"]).app, name="cell")  # issue 19
app.add_typer(__import__("canopy.cli_hosts", fromlist=["app"]).app, name="host")  # issue 19: enroll, drain
app.add_typer(__import__("canopy.cli_audit", fromlist=["app"]).app, name="audit")  # issue 14: CADF export
app.add_typer(__import__("canopy.cli_bus", fromlist=["app"]).app, name="bus")  # issue 14: CURVE keygen
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML configuration file (or CANOPY_CONFIG).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder for the SQLite file, images, secrets.")]


def _settings(config: Path | None, data_dir: Path | None = None) -> Settings:
    if config is not None:
        os.environ["CANOPY_CONFIG"] = str(config)
    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    settings = load_settings(**overrides)
    setup_process(settings)  # JSON (or text) logs with request IDs, and a metrics port if configured
    return settings


def tune_gc() -> None:
    """For a long-running service, once started: what start-up built is kept out of every collection
    (`gc.freeze`), and young collections run less often. A thousand simulated agents in one all-in-one spent
    half their time in full collections: bench/boot.py went from 43-46 to 107-111 servers/s with this and
    per-handler fanout decoding."""
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


Step = Callable[[], Awaitable[None]]


class _Started:
    """What a command started, for the signal to stop: each part's stop, run in the order added."""

    def __init__(self) -> None:
        self._stops: list[Step] = []

    def add(self, *stops: Step) -> None:
        """Stop these (in this order) when the command stops."""
        self._stops.extend(stops)

    async def stop(self) -> None:
        """Stop what was started."""
        for stop in self._stops:
            await stop()


def _run_until_signalled(start: Step, stop: Step) -> None:
    """Run a service until SIGINT/SIGTERM, then stop it cleanly."""

    async def main() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        # A signal during start-up (an agent waiting for libvirt) ends the wait instead of being ignored.
        starting = asyncio.ensure_future(start())
        waiting = asyncio.ensure_future(done.wait())
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            waiting.cancel()
            console.print("[bold]stopped during start-up[/bold]")
            return
        starting.result()
        tune_gc()
        await waiting
        console.print("[bold]stopping…[/bold]")
        await stop()

    asyncio.run(main())


@app.command("all-in-one")
def all_in_one(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    hosts: Annotated[int | None, typer.Option(help="How many simulated hypervisors.")] = None,
    port: Annotated[int | None, typer.Option(help="API port.")] = None,
    clouds_yaml: Annotated[Path, typer.Option(help="Where to write clouds.yaml.")] = Path("clouds.yaml"),
) -> None:
    """Run every service in one process on embedded defaults (SQLite, in-process bus, fake hypervisors)."""
    from canopy.allinone import AllInOne
    from canopy.clouds import write_clouds_yaml

    settings = _settings(config, data_dir)
    if port is not None:
        settings.api.port = port
        settings.api.public_url = f"http://{settings.api.host}:{port}"
    aio = AllInOne(settings, hosts=hosts if hosts is not None else settings.fake.hosts)

    async def start() -> None:
        await aio.start()
        auth_url = settings.api.public_url.rstrip("/") + "/identity"
        write_clouds_yaml(clouds_yaml, auth_url, settings.api.region, "admin", "demo")
        for line in welcome_lines(settings.api.public_url, auth_url, clouds_yaml.resolve(), aio.hosts,
                                  settings.data_dir):
            console.print(line, soft_wrap=True, highlight=False)

    _run_until_signalled(start, aio.stop)


def welcome_lines(url: str, auth_url: str, clouds_yaml: Path, hosts: int, data_dir: Path) -> list[str]:
    """What `make run` prints once the cloud answers: where it is and how to use it at once."""
    return [
        f"[bold green]Canopy is up[/bold green] at {url} with {hosts} simulated hypervisors (data in {data_dir}).",
        f"  Identity:     {auth_url}",
        f"  clouds.yaml:  {clouds_yaml}   (clouds: canopy = admin, canopy-demo = demo)",
        "  Users:        admin / admin (project admin, role admin), demo / demo (project demo, role member)",
        "  From another shell in this folder (`.venv/bin/pip install python-openstackclient` first):",
        "    .venv/bin/openstack --os-cloud canopy-demo server create --flavor m1.tiny --image canopy-tiny "
        "--network public --wait demo-1",
        "    .venv/bin/openstack --os-cloud canopy compute service list",
        "  Ctrl-C stops it; the next `make run` reuses the data.",
    ]


@app.command()
def api(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run the api service alone."""
    import socket

    import uvicorn

    from canopy.api.app import build_app, close_app, tls_files
    from canopy.heartbeat import ServiceHeartbeat
    from canopy.observability.metrics import BUS_METRICS
    from canopy.rpc.factory import make_transport
    from canopy.runtime import Cloud, open_databases

    settings = _settings(config, data_dir)

    async def main() -> None:
        bus = make_transport(settings.bus, bind=False, observer=BUS_METRICS)
        await bus.start()
        cloud = Cloud(settings=settings, dbs=open_databases(settings), bus=bus)
        app = build_app(cloud)
        cert, key = tls_files(cloud)
        server = uvicorn.Server(uvicorn.Config(app, host=settings.api.host, port=settings.api.port,
                                               lifespan="off", access_log=False,
                                               ssl_certfile=cert, ssl_keyfile=key))
        beat = ServiceHeartbeat(bus, "canopy-api", f"{socket.gethostname()}:{settings.api.port}",
                                settings.agent.heartbeat_s)
        beat.start()
        await server.serve()
        await close_app(app)
        await beat.stop()
        await bus.close()

    asyncio.run(main())


@app.command()
def conductor(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run a conductor alone."""
    from canopy.conductor.service import Conductor, conductor_name
    from canopy.observability.metrics import BUS_METRICS
    from canopy.rpc.factory import make_transport
    from canopy.runtime import Cloud, open_databases

    settings = _settings(config, data_dir)
    started = _Started()

    async def start() -> None:
        bus = make_transport(settings.bus, bind=True, service="conductor", observer=BUS_METRICS)
        await bus.start()
        cond = Conductor(Cloud(settings=settings, dbs=open_databases(settings), bus=bus),
                         name=conductor_name(settings))
        started.add(cond.stop, bus.close)
        await cond.start()

    _run_until_signalled(start, started.stop)


@app.command()
def scheduler(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run a scheduler alone."""
    from canopy.observability.metrics import BUS_METRICS
    from canopy.rpc.factory import make_transport
    from canopy.runtime import open_databases
    from canopy.scheduler.service import Scheduler

    settings = _settings(config, data_dir)
    started = _Started()

    async def start() -> None:
        bus = make_transport(settings.bus, bind=True, service="scheduler", observer=BUS_METRICS)
        await bus.start()
        dbs = open_databases(settings)
        sched = Scheduler(dbs.cell(settings.database.cell_name), bus, global_db=dbs.global_db,
                          config=settings.scheduler)
        started.add(sched.stop, bus.close)
        await sched.start(heartbeat_s=settings.agent.heartbeat_s)

    _run_until_signalled(start, started.stop)


@app.command()
def agent(config: ConfigOpt = None, data_dir: DataDirOpt = None,
          host: Annotated[str | None, typer.Option(help="This hypervisor's host name.")] = None,
          driver: Annotated[str | None, typer.Option(help="fake or libvirt (default: agent.driver).")] = None,
          enroll: Annotated[str | None, typer.Option("--enroll", help="Enroll first with this token.")] = None,
          api_url: Annotated[str | None, typer.Option("--api", help="The api's URL, to enroll.")] = None) -> None:
    """Run the agent of one hypervisor (it never touches the database)."""
    import socket

    from canopy.agent.service import Agent
    from canopy.agent.virt.fake import FakeDriver
    from canopy.observability.metrics import BUS_METRICS
    from canopy.rpc.factory import make_transport

    settings = _settings(config, data_dir)
    name = host or settings.agent.host or socket.gethostname()
    a = settings.agent
    started = _Started()

    async def start() -> None:
        nonlocal name
        if enroll or (settings.data_dir / "agent-enrollment.json").exists():
            from canopy.agent.enroll_start import enroll_and_configure

            name = await enroll_and_configure(settings, name, enroll, api_url, driver or a.driver)
        bus = make_transport(settings.bus, bind=False, observer=BUS_METRICS)
        await bus.start()
        if (driver or a.driver) == "libvirt":  # real guests: see docs/libvirt.md
            from canopy.agent.virt.libvirt.wiring import libvirt_agent

            agent_ = libvirt_agent(settings, name, bus)
        else:
            fake = FakeDriver(name, vcpus=a.vcpus, memory_mb=a.memory_mb, local_gb=a.disk_gb,
                              spawn_delay_s=settings.fake.spawn_delay_s, op_delay_s=settings.fake.op_delay_s)
            from canopy.agent.disk.imageclient import service_image_client
            from canopy.agent.disk.upload import ImageUploader
            from canopy.agent.net.setup import make_node

            agent_ = Agent(name, fake, bus, heartbeat_s=a.heartbeat_s, availability_zone=a.availability_zone,
                           datacenter=a.datacenter, rack=a.rack, net=make_node(name, settings))
            agent_.image_uploader = ImageUploader(service_image_client(settings))  # snapshots go up
        started.add(agent_.stop, bus.close)
        await agent_.start(register_timeout_s=3600)

    _run_until_signalled(start, started.stop)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply the migrations (global and cell); running it again changes nothing."""
    from canopy.db.migrate import current_revision, upgrade_all
    from canopy.runtime import open_databases

    settings = _settings(config, data_dir)
    dbs = open_databases(settings)
    upgrade_all(dbs)
    console.print(f"global: {current_revision(dbs.global_db.primary, 'global')}  "
                  f"cell {settings.database.cell_name}: {current_revision(dbs.default_cell.primary, 'cell')}",
                  soft_wrap=True)  # the revision lists are long: a wrapped line breaks revision ids
    dbs.dispose()


@db_app.command("seed")
def db_seed(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Create the first-run data (roles, admin and demo projects, flavors, public network, an image)."""
    from canopy.runtime import open_databases
    from canopy.seed import seed

    settings = _settings(config, data_dir)
    dbs = open_databases(settings)
    seed(dbs, settings.data_dir / "images")
    dbs.dispose()


def main() -> None:
    """The `canopy` entry point: a missing optional part ends the command with one line naming what to install."""
    from canopy.optional import MissingDependency

    try:
        app()
    except MissingDependency as e:
        typer.echo(f"canopy: {e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
