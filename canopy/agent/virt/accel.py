"""Which accelerator guests run with: KVM when it really boots guests here, else TCG (software emulation).

libvirt advertising `kvm` is not enough: on a nested hypervisor KVM can be present and still hang
stock kernels. So `auto` detects by booting: a probe guest runs under KVM and must print a marker on its
serial console within a timeout. The probe is the operator's kernel (and initrd) when configured — the
only faithful test, since a kernel's own start-up is what hangs — or else a built-in 64-bit probe that
switches to long mode and writes the marker (it catches a KVM that cannot run a guest at all, not
one that hangs only a full kernel). The answer is remembered per host boot.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("canopy.agent.libvirt")
MARKER = "CANOPY-ACCEL-PROBE-OK"


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """What to boot under KVM to see whether it works."""

    kernel: Path
    initrd: Path | None
    cmdline: str
    marker: str
    timeout_s: float


def builtin_probe(path: Path) -> Path:
    """Write the built-in probe: an ELF with a PVH entry that enters long mode and prints MARKER on COM1."""
    load = 0x100000

    def d(v: int) -> bytes:
        return struct.pack("<I", v)

    code = bytearray()
    # identity-map the first 2 MiB with one large page: PML4 → PDPT → PD
    code += b"\xc7\x05" + d(0x101000) + d(0x102003)
    code += b"\xc7\x05" + d(0x102000) + d(0x103003)
    code += b"\xc7\x05" + d(0x103000) + d(0x000083)
    code += b"\x0f\x20\xe0\x83\xc8\x20\x0f\x22\xe0"            # cr4 |= PAE
    code += b"\xb8" + d(0x101000) + b"\x0f\x22\xd8"             # cr3 = PML4
    code += b"\xb9" + d(0xC0000080) + b"\x0f\x32\x0d" + d(0x100) + b"\x0f\x30"  # EFER.LME
    code += b"\x0f\x20\xc0\x0d" + d(0x80000001) + b"\x0f\x22\xc0"  # cr0 |= PG | PE
    lgdt_at = len(code)
    code += b"\x0f\x01\x15" + d(0) + b"\xea" + d(0) + b"\x08\x00"  # lgdt [gdtr]; jmp 0x08:long_mode
    long_mode = len(code)
    code += b"\x66\xba\xf8\x03" + b"".join(b"\xb0" + bytes([c]) + b"\xee" for c in (MARKER + "\n").encode())
    code += b"\xfa\xf4\xeb\xfd"  # cli; hlt; loop
    code += b"\x90" * (-len(code) % 8)
    gdt = len(code)
    code += struct.pack("<QQ", 0, 0x00AF9A000000FFFF)  # null, 64-bit code segment
    gdtr = len(code)
    code += struct.pack("<HI", 15, load + gdt)
    code[lgdt_at + 3:lgdt_at + 7] = d(load + gdtr)
    code[lgdt_at + 8:lgdt_at + 12] = d(load + long_mode)
    note_name = b"Xen\x00"  # XEN_ELFNOTE_PHYS32_ENTRY (18): QEMU's PVH entry point
    note = struct.pack("<III", len(note_name), 4, 18) + note_name + d(load)
    code_off = 52 + 2 * 32
    note_off = code_off + len(code) + (-(code_off + len(code)) % 4)
    elf = bytearray(b"\x7fELF\x01\x01\x01" + b"\0" * 9)
    elf += struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, load, 52, 0, 0, 52, 32, 2, 40, 0, 0)
    elf += struct.pack("<IIIIIIII", 1, code_off, load, load, len(code), len(code), 7, 0x1000)
    elf += struct.pack("<IIIIIIII", 4, note_off, 0, 0, len(note), len(note), 4, 4)
    elf += code + b"\0" * (note_off - code_off - len(code)) + note
    path.write_bytes(bytes(elf))
    return path


def probe_xml(name: str, probe: ProbeSpec, console: Path) -> str:
    """A throwaway KVM domain that boots the probe with its console in a file."""
    root = ET.Element("domain", type="kvm")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = "128"
    ET.SubElement(root, "vcpu").text = "1"
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(probe.kernel)
    if probe.initrd:
        ET.SubElement(os_el, "initrd").text = str(probe.initrd)
    ET.SubElement(os_el, "cmdline").text = probe.cmdline
    ET.SubElement(ET.SubElement(root, "features"), "acpi")
    devices = ET.SubElement(root, "devices")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(console))
    ET.SubElement(serial, "target", port="0")
    return ET.tostring(root, encoding="unicode")


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def cache_key(probe: ProbeSpec, versions: str) -> str:
    h = hashlib.sha256(f"{boot_id()}|{versions}|{probe.kernel}|{probe.initrd}|{probe.cmdline}".encode())
    return h.hexdigest()[:32]


async def detect(workdir: Path, offers_kvm: bool, probe: ProbeSpec, versions: str,
                 boot: Callable[[str], Awaitable[Callable[[], Awaitable[None]]]]) -> str:
    """'kvm' if the probe prints its marker under KVM in time, else 'tcg'; remembered for this host boot.

    `boot(xml)` starts a transient domain and returns a coroutine function that destroys it."""
    if not offers_kvm:
        return "tcg"
    record = workdir / "accel.json"
    key = cache_key(probe, versions)
    try:
        saved = json.loads(record.read_text())
        if saved.get("key") == key:
            return str(saved["accel"])
    except (OSError, ValueError):
        pass
    accel = await _probe(workdir, probe, boot)
    record.write_text(json.dumps({"key": key, "accel": accel, "at": time.time()}))
    return accel


async def _probe(workdir: Path, probe: ProbeSpec, boot: Callable[[str], Awaitable[Callable[[], Awaitable[None]]]]
                 ) -> str:
    console = workdir / "accel-probe.log"
    console.unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        stop = await boot(probe_xml(f"canopy-accel-probe-{int(t0 * 1000) % 100000}", probe, console))
    except Exception as exc:  # libvirt refused a KVM domain: no usable KVM
        log.info("KVM probe could not start (%s); guests run with TCG", exc)
        return "tcg"
    try:
        while time.monotonic() - t0 < probe.timeout_s:
            if console.exists() and probe.marker.encode() in console.read_bytes():
                log.info("KVM probe booted in %.1fs; guests run with KVM", time.monotonic() - t0)
                return "kvm"
            await asyncio.sleep(0.2)
    finally:
        await stop()
    log.warning("KVM probe printed nothing in %.0fs: KVM is present but does not boot guests here; "
                "guests run with TCG", probe.timeout_s)
    return "tcg"
