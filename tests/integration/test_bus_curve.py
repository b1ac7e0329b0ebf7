"""ZeroMQ CURVE on the bus: an agent whose key is not listed is refused (it cannot register), a listed one
can, and it may register and announce only the hosts its key is bound to (no impersonation)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from canopy.config import BusConfig
from canopy.rpc.base import BusError, Target
from canopy.rpc.calls import RegisterHost
from canopy.rpc.curve import CurveKeys, check_sender, keys_from_settings, load_keypair
from canopy.rpc.messages import Ack, Message
from canopy.rpc.zmq import ZmqTransport


def keygen(path: Path) -> str:
    """`canopy bus keygen PATH`: the public key it prints."""
    from canopy.cli import app

    out = CliRunner().invoke(app, ["bus", "keygen", str(path)])
    assert out.exit_code == 0, out.output
    return out.stdout.strip()


def register(host: str) -> RegisterHost:
    return RegisterHost(host=host, hypervisor_type="fake", hypervisor_version=1, vcpus=1, memory_mb=1, local_gb=1)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return {name: keygen(tmp_path / name) for name in ("server", "good", "bad", "control")}


def conductor_keys(tmp_path: Path, keys: dict[str, str]) -> CurveKeys:
    bus = BusConfig(transport="zmq", curve_server_secret_file=str(tmp_path / "server"),
                    curve_allowed_clients={keys["good"]: ["hv-1", "hv-2"], keys["control"]: ["*"]})
    found = keys_from_settings(bus)
    assert found is not None
    return found


def client_keys(tmp_path: Path, name: str, server_public: str) -> CurveKeys:
    found = keys_from_settings(BusConfig(transport="zmq", curve_server_public_key=server_public,
                                         curve_client_secret_file=str(tmp_path / name)))
    assert found is not None
    return found


def test_keygen_writes_0600_and_refuses_to_overwrite(tmp_path: Path, keys: dict[str, str]) -> None:
    for name in ("server", "server.pub"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    public, secret = load_keypair(str(tmp_path / "server"))
    assert public.decode() == keys["server"] and len(secret) == 40
    from canopy.cli import app

    assert CliRunner().invoke(app, ["bus", "keygen", str(tmp_path / "server")]).exit_code == 1


async def test_wrong_key_is_refused_and_hosts_are_bound_to_keys(tmp_path: Path, keys: dict[str, str]) -> None:
    registered: list[str] = []

    async def conductor(msg: Message) -> Message | None:
        assert isinstance(msg, RegisterHost)
        check_sender(msg.host)  # what ConductorService.handle does first
        registered.append(msg.host)
        return Ack()

    server = ZmqTransport(bind="tcp://127.0.0.1:*", default_timeout=5.0, curve=conductor_keys(tmp_path, keys))
    server.serve(Target("conductor"), conductor)
    await server.start()
    assert server.endpoint
    agents: list[ZmqTransport] = []
    try:
        bad = ZmqTransport(connect=[server.endpoint], route_grace=0.5,
                           curve=client_keys(tmp_path, "bad", keys["server"]))
        plain = ZmqTransport(connect=[server.endpoint], route_grace=0.5)  # no CURVE at all
        good = ZmqTransport(connect=[server.endpoint], default_timeout=5.0,
                            curve=client_keys(tmp_path, "good", keys["server"]))
        agents += [bad, plain, good]
        for t in agents:
            await t.start()
        for intruder in (bad, plain):  # the handshake fails: no route to the conductor is ever learned
            with pytest.raises(BusError):
                await intruder.call(Target("conductor"), register("hv-1"), timeout=1.0)
        assert isinstance(await good.call(Target("conductor"), register("hv-1")), Ack)
        with pytest.raises(BusError, match="not bound to host 'hv-9'"):
            await good.call(Target("conductor"), register("hv-9"))  # another host's name
        assert registered == ["hv-1"]
        # Routes: the good key may serve hv-1 and hv-2; its claim to hv-9 is ignored.
        for host in ("hv-1", "hv-9"):
            good.serve(Target("agent", host), conductor)
        await good.call(Target("conductor"), register("hv-2"))  # a round trip: the hello went before it
        assert ("agent", "hv-1") in server._host_routes
        assert ("agent", "hv-9") not in server._host_routes
    finally:
        for t in agents:
            await t.close()
        await server.close()


async def test_a_control_key_speaks_for_any_host(tmp_path: Path, keys: dict[str, str]) -> None:
    async def conductor(msg: Message) -> Message | None:
        assert isinstance(msg, RegisterHost)
        check_sender(msg.host)
        return Ack()

    server = ZmqTransport(bind="tcp://127.0.0.1:*", default_timeout=5.0, curve=conductor_keys(tmp_path, keys))
    server.serve(Target("conductor"), conductor)
    await server.start()
    assert server.endpoint
    control = ZmqTransport(connect=[server.endpoint], default_timeout=5.0,
                           curve=client_keys(tmp_path, "control", keys["server"]))
    await control.start()
    try:
        assert isinstance(await control.call(Target("conductor"), register("anything")), Ack)
    finally:
        await control.close()
        await server.close()
