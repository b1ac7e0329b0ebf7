"""Every service in one process on the embedded defaults: SQLite, the in-process bus, simulated
hypervisors. `make run` starts this; the tests and benchmarks start it too."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from canopy.agent.service import Agent
from canopy.agent.virt.fake import FakeDriver
from canopy.config import Settings
from canopy.db import tables_cell as c
from canopy.db.migrate import upgrade_all
from canopy.observability.metrics import BUS_METRICS
from canopy.rpc.calls import InstanceSpec
from canopy.rpc.factory import make_transport
from canopy.runtime import Cloud, open_databases
from canopy.seed import seed
from canopy.states import PowerState

if TYPE_CHECKING:
    import uvicorn

    from canopy.agent.disk.imageclient import ImageApiClient
    from canopy.agent.net.privateovs import PrivateOvs
    from canopy.heartbeat import ServiceHeartbeat

log = logging.getLogger("canopy.allinone")


@dataclass
class AllInOne:
    """A whole cloud: api, scheduler, conductor and N fake agents, sharing one bus."""

    settings: Settings
    hosts: int = 50
    serve_http: bool = True
    agents: list[Agent] = field(default_factory=list)
    drivers: dict[str, FakeDriver] = field(default_factory=dict)
    _cloud: Cloud | None = None
    _server: uvicorn.Server | None = None
    _server_task: asyncio.Task[None] | None = None
    _api_beat: ServiceHeartbeat | None = None
    _image_client: ImageApiClient | None = None
    ovs: PrivateOvs | None = None

    @property
    def cloud(self) -> Cloud:
        """What the services share (the all-in-one must be started)."""
        if self._cloud is None:
            raise RuntimeError("the all-in-one is not started")
        return self._cloud

    async def start(self) -> None:
        """Migrate, seed, and start every service; returns once the api answers."""
        from canopy.conductor.service import Conductor
        from canopy.scheduler.service import Scheduler

        s = self.settings
        dbs = open_databases(s)
        upgrade_all(dbs)
        seed(dbs, s.data_dir / "images")
        bus = make_transport(s.bus, bind=True, service="all-in-one", observer=BUS_METRICS)
        await bus.start()
        self._cloud = cloud = Cloud(settings=s, dbs=dbs, bus=bus)
        # a name of its own across restarts: the leases of builds in flight when it died carry it
        self.conductor = Conductor(cloud, name=s.conductor.name or "conductor-0")
        await self.conductor.start(take_back=False)
        await self._start_agents()
        self.scheduler = Scheduler(dbs.cell(cloud.cell_name), bus, clock=cloud.clock, global_db=dbs.global_db,
                                   config=s.scheduler)
        await self.scheduler.start(heartbeat_s=s.agent.heartbeat_s, name="scheduler-0")
        await self.conductor.flush_heartbeats()
        # Tasks in flight when the process died resume now that their scheduler and hosts are up.
        await self.conductor.take_back_own_tasks()
        if self.serve_http:
            await self._start_http()

    async def _start_agents(self) -> None:
        from canopy.agent.net.setup import make_node, start_private_ovs

        fake, rng = self.settings.fake, random.Random(7)
        self.ovs = start_private_ovs(self.settings)  # network.apply = "private-ovs": a real switch of its own
        for n in range(self.hosts):
            name = f"hv-{n + 1:04d}"
            driver = FakeDriver(name, vcpus=fake.vcpus, memory_mb=fake.memory_mb, local_gb=fake.disk_gb,
                                spawn_delay_s=fake.spawn_delay_s, op_delay_s=fake.op_delay_s)
            self.drivers[name] = driver
            rack = f"r{n // 40 + 1:02d}"
            self.agents.append(Agent(name, driver, self.cloud.bus, heartbeat_s=self.settings.agent.heartbeat_s,
                                     availability_zone=self.settings.agent.availability_zone,
                                     datacenter=self.settings.agent.datacenter, rack=rack, rng=rng,
                                     net=make_node(name, self.settings, n + 1, self.ovs)))
        await self._adopt_guests()
        self._give_image_uploaders()
        # Register in batches: a thousand agents at once would only queue on one database.
        for i in range(0, len(self.agents), 100):
            await asyncio.gather(*(a.start() for a in self.agents[i:i + 100]))

    def _give_image_uploaders(self) -> None:
        """Snapshots of the simulated guests go up through the Image API, in-process, with the service
        credential (as a separate agent's would, over HTTP)."""
        import httpx

        from canopy.agent.disk.imageclient import service_image_client
        from canopy.agent.disk.upload import ImageUploader
        from canopy.api.app import build_app

        client = service_image_client(self.settings, httpx.ASGITransport(build_app(self.cloud)))
        self._image_client = client
        for agent in self.agents:
            agent.image_uploader = ImageUploader(client)

    async def _adopt_guests(self) -> None:
        """After a restart on the same data, the simulated hosts hold again the guests the database says
        they hold (a build still in flight is resumed by the conductor, whose spawn asks the host first)."""
        rows = await self.cloud.dbs.cell(self.cloud.cell_name).read(_guests_on, sorted(self.drivers))
        for r in rows:
            f = r["flavor"] or {}
            spec = InstanceSpec(uuid=r["uuid"], name=r["name"], hostname=r["hostname"] or r["name"],
                                project_id=r["project_id"], vcpus=f.get("vcpus", 1), memory_mb=f.get("ram", 0),
                                disk_gb=f.get("disk", 0), image_id=r["image_ref"] or "")
            self.drivers[r["host"]].adopt(spec, PowerState(r["power_state"]))
        if rows:
            log.info("the simulated hosts took back %d guest(s) from before the restart", len(rows))

    async def _start_http(self) -> None:
        import uvicorn

        from canopy.api.app import build_app, tls_files
        from canopy.heartbeat import ServiceHeartbeat

        s = self.settings
        cert, key = tls_files(self.cloud)
        config = uvicorn.Config(build_app(self.cloud), host=s.api.host, port=s.api.port,
                                lifespan="off", log_level="warning", access_log=False,
                                ssl_certfile=cert, ssl_keyfile=key)
        server = uvicorn.Server(config)
        self._server = server
        self._server_task = asyncio.create_task(server.serve())
        self._api_beat = ServiceHeartbeat(self.cloud.bus, "canopy-api", f"api-{s.api.port}", s.agent.heartbeat_s)
        self._api_beat.start()
        while not server.started:
            if self._server_task.done():
                self._server_task.result()
                raise RuntimeError("the api server stopped during start-up")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop every service and close the databases."""
        if self._api_beat is not None:
            await self._api_beat.stop()
        if self._server is not None:
            self._server.should_exit = True
            if self._server_task is not None:
                await self._server_task
            from canopy.api.app import close_app

            await close_app(self._server.config.app)  # the queued audit records
        for agent in self.agents:
            await agent.stop()
        if self._image_client is not None:
            await self._image_client.close()
        if self.ovs is not None:
            self.ovs.stop()
        if self._cloud is not None:
            await self.scheduler.stop()
            await self.conductor.stop()
            await self._cloud.bus.close()
            self._cloud.dbs.dispose()


def _guests_on(conn: Connection, hosts: list[str]) -> list[dict[str, Any]]:
    """Instances on these hosts with a power state (built), for the simulated hosts to take back."""
    i = c.instances.c
    out: list[dict[str, Any]] = []
    for n in range(0, len(hosts), 500):
        out.extend(dict(r) for r in conn.execute(
            select(i.uuid, i.name, i.hostname, i.project_id, i.flavor, i.image_ref, i.host, i.power_state)
            .where(i.host.in_(hosts[n:n + 500]), i.deleted.is_(False), i.power_state != int(PowerState.NOSTATE)))
            .mappings())
    return out
