"""The transport a process uses, from its settings."""

from __future__ import annotations

from canopy.config import BusConfig
from canopy.rpc.base import BusObserver, Transport


def make_transport(bus: BusConfig, *, bind: bool, service: str = "",
                   observer: BusObserver | None = None) -> Transport:
    """The bus named by the settings; `bind` for control services, which ZeroMQ peers connect to (each
    `service` on its own address, `BusConfig.zmq_bind_for`); `observer` is told of the traffic (the metrics)."""
    if bus.transport == "local":
        from canopy.rpc.local import LocalTransport

        return LocalTransport(default_timeout=bus.call_timeout_s, observer=observer)
    if bus.transport == "zmq":
        from canopy.rpc.curve import keys_from_settings
        from canopy.rpc.zmq import ZmqTransport

        return ZmqTransport(bind=bus.zmq_bind_for(service) if bind else None, connect=list(bus.zmq_connect),
                            observer=observer, curve=keys_from_settings(bus))
    if bus.transport == "nats":
        from canopy.rpc.nats import NatsTransport

        return NatsTransport(list(bus.nats_urls), control=bind, default_timeout=bus.call_timeout_s, observer=observer)
    if bus.transport == "amqp":
        from canopy.rpc.amqp import AmqpTransport

        return AmqpTransport(bus.amqp_url, default_timeout=bus.call_timeout_s, observer=observer)
    raise ValueError(f"unknown bus transport {bus.transport!r}")
