"""An agent's health checks (agent/health.py): each check alone, their timeouts and caching, and the
path heartbeat -> conductor -> `services.health` -> `/healthcheck/fleet` on an in-process cloud."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, inspect, select

from canopy.agent.health import (
    HostHealth,
    Unhealthy,
    agent_probes,
    disk_probe,
    has_switch,
    hypervisor_probe,
    network_probe,
)
from canopy.agent.net.fake import FakeApplier
from canopy.agent.net.node import NetNode
from canopy.agent.reconcile import NetNodeHook, NoNetwork
from canopy.agent.virt.fake import FakeDriver
from canopy.db import tables_cell as c
from canopy.db.migrate import upgrade_part
from canopy.rpc.calls import Heartbeat
from canopy.rpc.messages import decode_message
from tests.waiting import wait_until

GIB = 1 << 30


def fake_statvfs(free_bytes: int) -> Any:
    """A statvfs that reports `free_bytes` available on any path (4 KiB blocks), recording the paths asked."""
    asked: list[Path] = []

    def statvfs(path: Path) -> os.statvfs_result:
        asked.append(path)
        # (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax)
        return os.statvfs_result((4096, 4096, 10**9, free_bytes // 4096, free_bytes // 4096, 0, 0, 0, 0, 255))

    statvfs.asked = asked  # type: ignore[attr-defined]
    return statvfs


async def one_round(probes: dict[str, Any], timeout_s: float = 2.0) -> dict[str, str]:
    health = HostHealth(probes, timeout_s=timeout_s)
    await health.run()
    return health.failing()


# -- the checks, one by one -------------------------------------------------------------------------

async def test_disk_check_fails_below_the_threshold_and_says_how_much_is_free(tmp_path: Path) -> None:
    roomy, tight = fake_statvfs(12 * GIB), fake_statvfs(GIB // 2)
    assert await disk_probe(tmp_path, 5.0, roomy)() == f"12.0 GB free on {tmp_path}"
    assert roomy.asked == [tmp_path]
    with pytest.raises(Unhealthy, match=r"^0\.5 GB free on .*, below 5 GB$"):
        await disk_probe(tmp_path, 5.0, tight)()
    failing = await one_round({"disk:instances": disk_probe(tmp_path, 5.0, tight),
                               "disk:image_cache": disk_probe(tmp_path, 0.25, tight)})
    assert failing == {"disk:instances": f"0.5 GB free on {tmp_path}, below 5 GB"}


async def test_disk_check_reads_the_real_filesystem(tmp_path: Path) -> None:
    real_free_gb = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize / GIB
    assert (await one_round({"disk:x": disk_probe(tmp_path, 0.0)})) == {}
    failing = await one_round({"disk:x": disk_probe(tmp_path, real_free_gb + 1000)})
    assert failing["disk:x"].endswith(f"below {real_free_gb + 1000:g} GB")
    missing = await one_round({"disk:x": disk_probe(tmp_path / "gone", 0.0)})
    assert missing["disk:x"].startswith("FileNotFoundError: ")


async def test_a_fake_hypervisor_told_to_fail_is_reported_then_recovers() -> None:
    driver = FakeDriver("hv-1")
    health = HostHealth({"hypervisor": hypervisor_probe(driver)})
    await health.run()
    assert health.failing() == {} and health.results["hypervisor"].detail == "fake 1000 answered"
    driver.fail_on("wait_ready", "libvirt: connection reset by peer")
    await health.run()
    assert health.failing() == {"hypervisor": "DriverError: libvirt: connection reset by peer"}
    await health.run()
    assert health.failing() == {}


async def test_libvirt_test_driver_answers_and_a_missing_daemon_fails(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    from canopy.agent.disk.cache import ImageCache
    from canopy.agent.virt.libvirt.driver import LibvirtDriver
    from canopy.agent.virt.vif import FakeTaps
    from canopy.config import LibvirtConfig

    def driver(uri: str) -> LibvirtDriver:
        config = LibvirtConfig(uri=uri, instances_path=tmp_path / "instances")
        return LibvirtDriver("hv-test", config, ImageCache(tmp_path / "cache", source=None), FakeTaps())  # type: ignore[arg-type]

    alive = driver("test:///default")
    health = HostHealth({"hypervisor": hypervisor_probe(alive)})
    await health.run()
    assert health.failing() == {} and health.results["hypervisor"].detail.upper().startswith("TEST ")
    await alive.close()
    await health.run()  # a closed connection is opened again
    assert health.failing() == {}
    await alive.close()
    gone = driver(f"qemu:///system?socket={tmp_path}/no-such-socket")
    failing = await one_round({"hypervisor": hypervisor_probe(gone)})
    assert failing["hypervisor"].startswith("HypervisorUnavailable: libvirt at qemu:///system?socket="), failing


class Switch:
    """A real-switch applier stand-in: `vsctl` answers, or raises what it is told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.error: Exception | None = None

    async def vsctl(self, *args: str) -> str:
        self.calls.append(args)
        if self.error:
            raise self.error
        return ""


async def test_switch_check_runs_only_with_a_real_switch_and_reports_it_unreachable() -> None:
    fake_node = NetNode("hv-1", FakeApplier())
    assert not has_switch(NoNetwork()) and not has_switch(NetNodeHook(fake_node))
    assert "switch" not in agent_probes(FakeDriver("hv-1"), fake_node, None, {}, 5.0)
    switch = Switch()
    node = NetNode("hv-1", switch)  # type: ignore[arg-type]
    probes = agent_probes(FakeDriver("hv-1"), node, None, {}, 5.0)
    assert sorted(probes) == ["hypervisor", "network", "switch"]
    switch.error = RuntimeError("ovs-vsctl: unix:/run/openvswitch/db.sock: database connection failed")
    failing = await one_round({"switch": probes["switch"]})
    assert failing == {"switch": "RuntimeError: ovs-vsctl: unix:/run/openvswitch/db.sock: database connection failed"}
    assert switch.calls == [("--timeout=5", "show")]


async def test_network_check_fails_until_a_conductor_delivered_the_host_state() -> None:
    node = NetNode("hv-1", FakeApplier())
    failing = await one_round({"network": network_probe(node)})
    assert failing == {"network": "no network state from a conductor yet: this host's flows are not loaded"}


def test_disks_become_one_check_each() -> None:
    probes = agent_probes(FakeDriver("hv-1"), NetNode("hv-1", FakeApplier()), NoNetwork(),
                          {"instances": Path("/a"), "image_cache": Path("/b")}, 5.0)
    assert sorted(probes) == ["disk:image_cache", "disk:instances", "hypervisor", "network"]


# -- timeouts and the cached result -----------------------------------------------------------------

async def test_a_hung_check_times_out_is_not_started_twice_and_the_heartbeat_does_not_wait() -> None:
    release, starts = asyncio.Event(), []

    async def hangs() -> str:
        starts.append(1)
        await release.wait()
        return "answered late"

    async def quick() -> str:
        raise Unhealthy("broken")

    health = HostHealth({"hypervisor": hangs, "other": quick}, timeout_s=0.1, wait_s=0.05)
    t0 = time.monotonic()
    # nothing finished within wait_s: not healthy yet (an enrolling host must not pass on no evidence)
    assert await health.summary() == {"health": "no health check has completed yet"}
    assert time.monotonic() - t0 < 0.09
    await wait_until(lambda: health.results, 5.0, what="the round ending at the check's timeout (0.1 s)")
    assert health.failing() == {"hypervisor": "no answer for 0s", "other": "broken"}
    await health.run()  # the hung call is waited on again, not started again
    assert len(starts) == 1 and health.failing()["hypervisor"].startswith("no answer for")
    release.set()
    await health.run()
    assert len(starts) == 1 and health.failing() == {"other": "broken"}
    assert health.results["hypervisor"].detail == "answered late"
    await health.run()
    assert len(starts) == 2
    await health.stop()


async def test_details_are_kept_short() -> None:
    async def verbose() -> str:
        raise Unhealthy("x" * 1000 + "\nsecond line")

    assert len((await one_round({"v": verbose}))["v"]) == 200


# -- the heartbeat on the wire ----------------------------------------------------------------------

def test_a_heartbeat_without_health_is_accepted_and_reads_as_healthy() -> None:
    old = {"binary": "canopy-agent", "host": "hv-1", "service_version": "0.1.0", "sent_at": 1.0}
    beat = decode_message("heartbeat", Heartbeat.version, old)
    assert isinstance(beat, Heartbeat) and beat.health == {}
    new = decode_message("heartbeat", Heartbeat.version, {**old, "health": {"hypervisor": "down"}})
    assert new.health == {"hypervisor": "down"}  # type: ignore[attr-defined]
    assert Heartbeat.version == 1  # an optional field: receivers of version 1 read it (and ignore it)


# -- the migration ----------------------------------------------------------------------------------

def test_migration_adds_a_nullable_health_column_and_keeps_rows(tmp_path: Path) -> None:
    import datetime as dt

    from alembic import command

    from canopy.db.migrate import _config

    engine = create_engine(f"sqlite:///{tmp_path / 'cell.db'}")
    upgrade_part(engine, "cell", "4372ce70460e")  # the cell tables before any later revision
    assert "health" not in {col["name"] for col in inspect(engine).get_columns("services")}
    now = dt.datetime(2026, 11, 25, 12, 0)
    with engine.begin() as conn:
        conn.execute(insert(c.services).values(uuid="u1", binary="canopy-agent", host="hv-1", version="0.1.0",
                                                disabled=False, forced_down=False, created_at=now, updated_at=now))
    upgrade_part(engine, "cell")
    columns = {col["name"]: col for col in inspect(engine).get_columns("services")}
    assert columns["health"]["nullable"] is True
    with engine.connect() as conn:
        assert conn.execute(select(c.services.c.host, c.services.c.health)).all() == [("hv-1", None)]
    cfg = _config("cell")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0900health01-1")
    assert "health" not in {col["name"] for col in inspect(engine).get_columns("services")}
    engine.dispose()
