"""One host's libvirt connection: blocking calls run in threads with libvirt's errors as DriverErrors,
domains found by UUID, and what the host offers (read once, with the accelerator guests run with).

    hv = Hypervisor("hv-1", settings.libvirt)
    await hv.wait_ready()                    # connects, reads the host, picks KVM or TCG (once)
    dom = await hv.dom(uuid)                 # InstanceNotFound when libvirt has no such domain
    await hv.call(dom.create)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from canopy.agent.virt import accel as accelmod
from canopy.agent.virt.base import DriverError, HypervisorUnavailable, InstanceNotFound
from canopy.agent.virt.libvirt.host import HostFacts, read_facts
from canopy.config import LibvirtConfig
from canopy.optional import require_libvirt

libvirt = require_libvirt()  # an optional part: a one-line error naming the extra when missing

log = logging.getLogger("canopy.agent.libvirt")
T = TypeVar("T")

# libvirt prints every error to stderr by default; ours are raised as exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class Hypervisor:
    """A libvirt connection (reopened when it died) and the facts of its host."""

    def __init__(self, host: str, config: LibvirtConfig) -> None:
        self.host = host
        self.config = config
        self.root = config.instances_path
        self.accel = "tcg"  # kvm, tcg, or test (libvirt's in-memory driver); decided by wait_ready
        self.facts: HostFacts | None = None
        self._conn: Any = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking libvirt call in a thread; libvirt errors become DriverErrors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise InstanceNotFound(f"libvirt on {self.host}: {exc}") from exc
            raise DriverError(f"libvirt on {self.host}: {exc}") from exc

    def connection(self) -> Any:
        """The open connection (blocking: opens it when there is none or it died)."""
        if self._conn is None or not self._conn.isAlive():
            try:
                self._conn = libvirt.open(self.config.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorUnavailable(f"libvirt at {self.config.uri} does not answer: {exc}") from exc
        return self._conn

    async def wait_ready(self) -> None:
        """Connect, read the host, and (once) decide the accelerator; HypervisorUnavailable if libvirt is down.
        Each call is a round trip (getLibVersion): the agent's health check calls it every heartbeat."""
        conn = await asyncio.to_thread(self.connection)
        await self.call(conn.getLibVersion)  # a DriverError when the daemon died or hangs up
        if self.facts is None:
            self.facts = await asyncio.to_thread(read_facts, conn, self.root)
            self.accel = await self._detect_accel(self.facts)
            log.info("libvirt %s on %s: %s %s, guests run with %s", self.config.uri, self.host,
                     self.facts.hypervisor_type, self.facts.hypervisor_version, self.accel.upper())

    def known_facts(self) -> HostFacts:
        """The host's facts; HypervisorUnavailable before the first wait_ready."""
        if self.facts is None:
            raise HypervisorUnavailable("the libvirt driver has not connected yet (wait_ready first)")
        return self.facts

    async def _detect_accel(self, facts: HostFacts) -> str:
        if facts.hypervisor_type.upper() == "TEST":  # libvirt's in-memory driver (fast tests)
            return "test"
        if self.config.accel != "auto":
            return self.config.accel
        kernel = self.config.accel_probe_kernel or accelmod.builtin_probe(self.root / "accel-probe.elf")
        marker = self.config.accel_probe_marker if self.config.accel_probe_kernel else accelmod.MARKER
        probe = accelmod.ProbeSpec(kernel, self.config.accel_probe_initrd, self.config.accel_probe_cmdline,
                                   marker, self.config.accel_probe_timeout_s)
        return await accelmod.detect(self.root, facts.offers_kvm, probe, str(facts.hypervisor_version),
                                     self._boot_transient)

    async def _boot_transient(self, xml: str) -> Callable[[], Awaitable[None]]:
        dom = await self.call(self.connection().createXML, xml, 0)

        async def stop() -> None:
            try:
                await self.call(dom.destroy)
            except DriverError:
                pass

        return stop

    async def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

    def domain_type(self) -> str:
        """The domain XML's type for the accelerator: kvm, qemu (TCG) or test."""
        return {"kvm": "kvm", "tcg": "qemu", "test": "test"}[self.accel]

    async def dom(self, uuid: str) -> Any:
        """The guest's domain; InstanceNotFound when libvirt has none."""
        return await self.call(self.connection().lookupByUUIDString, uuid)

    async def exists(self, uuid: str) -> bool:
        """Whether libvirt has a domain with that UUID."""
        try:
            await self.dom(uuid)
            return True
        except InstanceNotFound:
            return False

    async def define(self, xml: str) -> Any:
        """Define (or redefine) a persistent domain; the domain."""
        return await self.call(self.connection().defineXML, xml)

    async def xml_of(self, dom: Any, flags: int = 0) -> str:
        """The domain's XML."""
        return await self.call(dom.XMLDesc, flags)
