"""Bus benchmark: casts/s, RPC round trips/s and call latency, in-process against ZeroMQ on loopback.

    python bench/bus.py            # the full run
    python bench/bus.py --quick    # smaller counts, for a smoke test

For zmq the server is a second process (this script with --serve), so the figures are for two
processes talking over TCP. Many calls are in flight at once (--concurrency callers, each calling in
a loop). The last line printed is one JSON object, for scripts to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

from canopy.rpc.base import Target, Transport  # noqa: E402
from canopy.rpc.local import LocalTransport  # noqa: E402
from canopy.rpc.messages import Message  # noqa: E402
from canopy.rpc.zmq import ZmqTransport  # noqa: E402

RPC, SINK, COUNT = Target("bench_rpc"), Target("bench_sink"), Target("bench_count")
PAYLOAD = "x" * 64  # a small body, like most control-plane messages


class BenchPing(Message):
    kind: ClassVar[str] = "bench_ping"
    n: int = 0
    payload: str = ""


class BenchPong(Message):
    kind: ClassVar[str] = "bench_pong"
    n: int = 0


class BenchCounted(Message):
    kind: ClassVar[str] = "bench_counted"
    count: int = 0


class BenchServer:
    """Echoes calls and counts casts."""

    def __init__(self) -> None:
        self.casts = 0

    def install(self, bus: Transport) -> None:
        """Serve the benchmark's three topics on a bus."""
        bus.serve(RPC, self.echo)
        bus.serve(SINK, self.sink)
        bus.serve(COUNT, self.count)

    async def echo(self, msg: Message) -> Message:
        assert isinstance(msg, BenchPing)
        return BenchPong(n=msg.n)

    async def sink(self, msg: Message) -> None:
        self.casts += 1

    async def count(self, msg: Message) -> Message:
        return BenchCounted(count=self.casts)


async def _casts_seen(bus: Transport) -> int:
    reply = await bus.call(COUNT, BenchPing())
    assert isinstance(reply, BenchCounted)
    return reply.count


async def measure(bus: Transport, casts: int, calls: int, concurrency: int) -> dict[str, float]:
    """Cast throughput (until the server has them all), then RPC throughput and latency."""
    await asyncio.gather(*(bus.call(RPC, BenchPing(n=i)) for i in range(min(calls, 1000))))  # warm up

    before = await _casts_seen(bus)
    started = time.perf_counter()
    msg = BenchPing(payload=PAYLOAD)
    for _ in range(casts):
        await bus.cast(SINK, msg)
    while await _casts_seen(bus) < before + casts:
        await asyncio.sleep(0.001)
    cast_rate = casts / (time.perf_counter() - started)

    latencies: list[int] = []
    per_caller = calls // concurrency

    async def caller() -> None:
        ping = BenchPing(n=1, payload=PAYLOAD)
        for _ in range(per_caller):
            t0 = time.perf_counter_ns()
            await bus.call(RPC, ping, timeout=30)
            latencies.append(time.perf_counter_ns() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "cast_per_s": cast_rate,
        "rpc_per_s": len(latencies) / elapsed,
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1000,
    }


async def bench_inproc(casts: int, calls: int, concurrency: int) -> dict[str, float]:
    bus = LocalTransport()
    BenchServer().install(bus)
    await bus.start()
    try:
        return await measure(bus, casts, calls, concurrency)
    finally:
        await bus.close()


async def bench_zmq(casts: int, calls: int, concurrency: int) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        endpoint = server.stdout.readline().strip()
        if not endpoint.startswith("tcp://"):
            raise RuntimeError(f"bench server did not start: {endpoint!r}")
        bus = ZmqTransport(connect=[endpoint])
        await bus.start()
        try:
            return await measure(bus, casts, calls, concurrency)
        finally:
            await bus.close()
    finally:
        server.stdin.close()  # the server stops when its stdin closes
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def serve() -> None:
    """The zmq server process: bind on a free loopback port, print it, serve until stdin closes."""
    bus = ZmqTransport(bind="tcp://127.0.0.1:*")
    BenchServer().install(bus)
    await bus.start()
    print(bus.endpoint, flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await bus.close()


def main() -> None:
    """Run both transports and print a table, then the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--concurrency", type=int, default=100, help="calls in flight at once")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    casts, calls = (5_000, 5_000) if args.quick else (50_000, 50_000)
    results = {
        "inproc": asyncio.run(bench_inproc(casts, calls, args.concurrency)),
        "zmq": asyncio.run(bench_zmq(casts, calls, args.concurrency)),
    }
    print(f"{casts} casts, {calls} calls with {args.concurrency} in flight, loopback\n")
    print(f"{'transport':<10} {'casts/s':>10} {'rpc/s':>10} {'p50 µs':>10} {'p99 µs':>10}")
    for name, r in results.items():
        print(
            f"{name:<10} {r['cast_per_s']:>10,.0f} {r['rpc_per_s']:>10,.0f}"
            f" {r['p50_us']:>10,.0f} {r['p99_us']:>10,.0f}"
        )
    print(json.dumps({
        "inproc_rpc_per_s": round(results["inproc"]["rpc_per_s"]),
        "inproc_p99_us": round(results["inproc"]["p99_us"]),
        "zmq_rpc_per_s": round(results["zmq"]["rpc_per_s"]),
        "zmq_p99_us": round(results["zmq"]["p99_us"]),
    }))


if __name__ == "__main__":
    main()
