"""The agent's network side: keeps the host's desired state, compiles it, and applies it through an
Applier — a full load on start and on the reconcile timer, a diff for each batch of changes. The
program is built incrementally (`builder`): a message about a few neighbors costs a few fragments, not a
compile of every neighbor on the host's networks.

It never applies anything before its first full sync: on an agent restart the switch keeps the flows of
the previous run until the complete new set is ready, and `replace-flows` then changes only what
differs (nothing, when nothing changed), so traffic never sees an empty table.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from canopy.agent.net import tables as t
from canopy.agent.net.applier import Applier, Tap
from canopy.agent.net.builder import ProgramBuilder
from canopy.agent.net.model import Program, ProgramDiff, VmPort, diff_programs
from canopy.agent.net.state import DesiredState
from canopy.rpc.calls import NetworkSync

log = logging.getLogger("canopy.agent.net")

Requester = Callable[[], Awaitable[NetworkSync]]


class NetNode:
    """One host's flows: desired state in, programmed bridge out."""

    def __init__(
        self,
        host: str,
        applier: Applier,
        *,
        request_sync: Requester | None = None,
        uplink_ofports: dict[str, int] | None = None,
        tunnel_ip: str | None = None,
        reconcile_s: float = 60.0,
        full_sync_s: float = 600.0,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.applier = applier
        self.request_sync = request_sync
        self.state = DesiredState(host, dict(uplink_ofports or {}), tunnel_ip)
        self.reconcile_s = reconcile_s
        self.full_sync_s = full_sync_s
        self.rng = rng or random.Random()
        self.program: Program | None = None  # what the bridge holds, as far as this process knows
        self.applied_at: dict[str, float] = {}  # port id -> when its flows were last (re)applied
        self.applies = 0
        self.builder = ProgramBuilder()
        self._dirty = False
        self._changed: set[str] | None = set()  # neighbors changed since the last build (None: anything)
        self._wired: tuple[tuple[str, int], ...] | None = None
        self._layout: tuple[tuple[tuple[str, int], ...], str | None] | None = None
        self._lock = asyncio.Lock()
        self._applied = asyncio.Condition()
        self._loop: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the complete desired state and apply it, then reconcile on a timer."""
        self._loop = asyncio.create_task(self._run(), name=f"net-{self.host}")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    async def _run(self) -> None:
        await self._first_sync()
        last_full = time.monotonic()
        while True:
            # Jittered, so that a thousand agents restarted together do not reconcile in step.
            await asyncio.sleep(self.reconcile_s * self.rng.uniform(0.8, 1.2))
            try:
                if time.monotonic() - last_full >= self.full_sync_s:
                    await self.sync_full()
                    last_full = time.monotonic()
                else:
                    await self.reconcile()
            except Exception:
                log.exception("network reconcile of %s failed", self.host)

    async def _first_sync(self) -> None:
        delay = 0.1
        while not self.state.synced:
            try:
                await self.sync_full()
            except Exception as exc:  # the conductor may not be up yet: keep the switch as it is
                log.warning("network sync of %s failed (%s); retrying in %.1fs", self.host, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def sync_full(self) -> None:
        """Ask a conductor for the complete desired state and load it (with the changes that arrived while
        it was on its way merged again on top: they may be newer than its snapshot)."""
        if self.request_sync is None:
            return
        self.state.expect_full()
        try:
            msg = await self.request_sync()
            await self.handle(msg)
        finally:
            self.state.full_settled()

    # -- messages ---------------------------------------------------------------------------------

    async def handle(self, msg: NetworkSync) -> None:
        """Take in a sync message and apply the result (a full load for a full sync)."""
        if not self.state.concerns(msg) and not self.state.awaited_fulls:
            return
        want_full = self.state.merge(msg)
        self._dirty = True
        if msg.full or msg.complete_networks or self._changed is None:
            self._changed = None
        else:
            self._changed.update(n.port_id for n in msg.neighbors)
            self._changed.update(row[0] for row in msg.neighbor_rows)
            self._changed.update(msg.removed_neighbors)
            self._changed.update(p.id for p in msg.ports)  # a port that moved here is no neighbor any more
        await self.apply(full=msg.full)
        if want_full:
            asyncio.get_running_loop().create_task(self.sync_full())

    async def reconcile(self) -> None:
        """Load the complete program and re-check the wiring, whatever this process believes the switch holds."""
        self._dirty = True
        await self.apply(full=True)

    async def apply(self, full: bool = False) -> None:
        """Compile and apply what changed since the last apply (everything when `full`)."""
        async with self._lock:
            if not self.state.synced or not (self._dirty or full):
                return
            self._dirty = False
            changed, self._changed = self._changed, set()
            old_ports = self.program.ports if self.program is not None else ()
            program, diff = self.builder.build(self.state, changed)
            try:
                await self._program(program, diff, old_ports, full)
            except Exception:
                self.program = None  # unknown: the next apply loads everything
                self.builder.reset()
                raise
        async with self._applied:
            self._applied.notify_all()

    async def _program(self, program: Program, diff: ProgramDiff | None, old_ports: tuple[VmPort, ...],
                       full: bool) -> None:
        """Apply `program`: all of it, or `diff` (the builder's; None: the difference from the last one)."""
        old = self.program
        layout = (tuple(sorted(self.state.uplinks().items())), self.state.tunnel_ip)
        if full or old is None or layout != self._layout:  # bridges and uplinks before the flows that use them
            await self.applier.setup(dict(layout[0]), layout[1])
            self._layout = layout
        if full or old is None:
            await self.applier.replace(program)
            changed = {p.id for p in program.ports}
        else:
            diff = diff if diff is not None else diff_programs(old, program)
            if not diff.empty:
                await self.applier.change(diff)
            changed = {p.id for p in set(program.ports) ^ set(old_ports)}
        self.program = program
        await self._wire(program, force=full)
        now = time.monotonic()
        for port_id in changed:
            self.applied_at[port_id] = now
        self.applies += 1

    async def _wire(self, program: Program, force: bool) -> None:
        wanted = tuple(sorted((p.id, p.ofport) for p in program.ports))
        if force or wanted != self._wired:
            taps = [Tap(p.id, t.tap_name(p.id), p.ofport, p.mac, p.device_id) for p in program.ports]
            await self.applier.wire(taps)
            self._wired = wanted

    async def plug(self) -> None:
        """Re-check the wiring now (a guest's taps were just created or removed)."""
        async with self._lock:
            if self.program is not None:
                await self._wire(self.program, force=True)

    async def wait_applied(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `check()` holds after an apply (tests and benchmarks)."""
        async with self._applied:
            await asyncio.wait_for(self._applied.wait_for(check), timeout)
