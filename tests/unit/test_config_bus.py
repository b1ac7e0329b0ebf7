"""One `[bus] zmq_bind` on a control machine gives each control service an address of its own."""

from __future__ import annotations

import pytest

from canopy.config import BusConfig


@pytest.mark.parametrize(("bind", "binds", "service", "expected"), [
    ("tcp://0.0.0.0:7100", {}, "conductor", "tcp://0.0.0.0:7100"),
    ("tcp://0.0.0.0:7100", {}, "scheduler", "tcp://0.0.0.0:7101"),
    ("tcp://0.0.0.0:7100", {}, "all-in-one", "tcp://0.0.0.0:7100"),
    ("tcp://[::]:7200", {}, "scheduler", "tcp://[::]:7201"),
    ("tcp://0.0.0.0:7100", {"scheduler": "tcp://10.0.0.5:9000"}, "scheduler", "tcp://10.0.0.5:9000"),
    ("ipc:///run/canopy/bus", {}, "scheduler", "ipc:///run/canopy/bus"),
    ("", {}, "conductor", ""),
])
def test_each_control_service_binds_its_own_port(bind: str, binds: dict[str, str], service: str,
                                                 expected: str) -> None:
    assert BusConfig(zmq_bind=bind, zmq_binds=binds).zmq_bind_for(service) == expected


def test_the_conductor_and_scheduler_of_one_file_never_share_an_address() -> None:
    bus = BusConfig(zmq_bind="tcp://0.0.0.0:7100")
    assert bus.zmq_bind_for("conductor") != bus.zmq_bind_for("scheduler")
