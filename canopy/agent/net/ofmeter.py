"""Meters in bulk over one OpenFlow 1.3 connection to a bridge's management socket.

`ovs-ofctl` has no bulk meter command and bundles cannot carry meters, so a host with a thousand QoS
limits would start a thousand processes. This writes OFPT_METER_MOD messages back to back on one
connection and ends with a barrier; an OFPT_ERROR in reply fails the batch with what the switch said.
(A meter_mod changes one meter; a failure leaves the earlier ones of the batch applied, so the applier
re-reads the meters before its next load.)
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from pathlib import Path

from canopy.agent.net.model import Meter

OFP13 = 4
OFPT_HELLO, OFPT_ERROR, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY = 0, 1, 2, 3
OFPT_BARRIER_REQUEST, OFPT_BARRIER_REPLY, OFPT_METER_MOD = 20, 21, 29
OFPMC_ADD, OFPMC_MODIFY, OFPMC_DELETE = 0, 1, 2
OFPMF_KBPS, OFPMF_BURST = 1, 4
OFPMBT_DROP = 1
HEADER = struct.Struct("!BBHI")


class MeterError(RuntimeError):
    """The switch refused a meter change."""


def _message(kind: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(OFP13, kind, HEADER.size + len(body), xid) + body


def meter_mod(command: int, meter: Meter) -> bytes:
    """The body of an OFPT_METER_MOD: one drop band at the meter's rate, with its burst."""
    band = struct.pack("!HHII4x", OFPMBT_DROP, 16, meter.kbps, meter.burst_kb)
    return struct.pack("!HHI", command, OFPMF_KBPS | OFPMF_BURST, meter.id) + (band if command != OFPMC_DELETE else b"")


async def apply_meters(socket_path: Path, changes: Iterable[tuple[int, Meter]], timeout_s: float = 30.0) -> int:
    """Send (command, meter) changes on one connection; the number sent. Raises MeterError on a refusal."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket_path)), timeout_s)
    try:
        writer.write(_message(OFPT_HELLO, 1))
        sent = 0
        for command, meter in changes:
            writer.write(_message(OFPT_METER_MOD, 100 + sent, meter_mod(command, meter)))
            sent += 1
        barrier = 100 + sent
        writer.write(_message(OFPT_BARRIER_REQUEST, barrier))
        await writer.drain()
        await asyncio.wait_for(_until_barrier(reader, writer, barrier), timeout_s)
        return sent
    finally:
        writer.close()
        await writer.wait_closed()


async def _until_barrier(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, barrier: int) -> None:
    errors: list[str] = []
    while True:
        version, kind, length, xid = HEADER.unpack(await reader.readexactly(HEADER.size))
        body = await reader.readexactly(length - HEADER.size)
        if kind == OFPT_ERROR:
            etype, code = struct.unpack("!HH", body[:4])
            errors.append(f"meter_mod xid {xid}: OpenFlow error type {etype} code {code}")
        elif kind == OFPT_ECHO_REQUEST:
            writer.write(HEADER.pack(version, OFPT_ECHO_REPLY, length, xid) + body)
        elif kind == OFPT_BARRIER_REPLY and xid == barrier:
            if errors:
                raise MeterError("; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""))
            return
