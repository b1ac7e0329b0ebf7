"""A libvirt domain as a typed description, turned into XML with xml.etree (never string templates).

    spec = DomainSpec(name="canopy-<uuid>", uuid=uuid, domain_type="qemu", memory_mib=256, vcpus=1,
                      disks=[DiskSpec(path=".../disk", target="vda")], serial_log=".../console.log")
    xml = to_xml(spec)

The model holds what Canopy decides; operators reach the rest through customize.py (flavor, image and
host settings) and its XPath patch rules, applied to the element this module builds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

CANOPY_NS = "https://canopy.example/xmlns/instance/1"
ET.register_namespace("canopy", CANOPY_NS)


@dataclass(frozen=True, slots=True)
class CpuSpec:
    """The guest CPU: `mode` none (hypervisor default), host-model, host-passthrough or custom."""

    mode: str = "none"
    model: str | None = None
    # (policy, name): policy is require or disable
    features: tuple[tuple[str, str], ...] = ()
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """A disk or CD-ROM: a file (`source` "file"), or a block device such as a logical volume ("block")."""

    path: str
    target: str
    format: str = "qcow2"
    device: str = "disk"
    bus: str = "virtio"
    readonly: bool = False
    cache: str = "none"
    serial: str | None = None
    source: str = "file"  # file | block
    io: str | None = None  # native: Linux AIO, for block devices opened with cache none


@dataclass(frozen=True, slots=True)
class InterfaceSpec:
    """A NIC: a tap the agent made (`ethernet`), or a port libvirt adds to an Open vSwitch bridge (`ovs`)."""

    mac: str
    tap: str
    kind: str = "ethernet"
    model: str = "virtio"
    bridge: str = "br-int"
    port_id: str | None = None
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """Everything Canopy puts in a domain's XML."""

    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    domain_type: str = "qemu"
    arch: str = "x86_64"
    machine: str = "pc"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    cpu: CpuSpec = field(default_factory=CpuSpec)
    disks: tuple[DiskSpec, ...] = ()
    interfaces: tuple[InterfaceSpec, ...] = ()
    serial_log: str | None = None
    serial_console: bool = True
    video: str = "none"
    usb: bool = False
    memballoon: bool = False
    rng: bool = True
    # canopy:instance metadata: what reconcile needs to know about a guest without the database
    metadata: tuple[tuple[str, str], ...] = ()


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _os(root: ET.Element, spec: DomainSpec) -> None:
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch, machine=spec.machine)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")


def _cpu(root: ET.Element, cpu: CpuSpec, vcpus: int) -> None:
    if cpu.mode == "none" and not cpu.sockets:
        return
    attrs = {"mode": cpu.mode} if cpu.mode != "none" else {}
    if cpu.mode == "custom":
        attrs["match"] = "exact"
    el = _sub(root, "cpu", **attrs)
    if cpu.model:
        _sub(el, "model", cpu.model, fallback="forbid")
    if cpu.sockets or cpu.cores or cpu.threads:
        _sub(el, "topology", sockets=str(cpu.sockets or 1), dies="1", cores=str(cpu.cores or vcpus),
             threads=str(cpu.threads or 1))
    for policy, name in cpu.features:
        _sub(el, "feature", policy=policy, name=name)


def _disk(devices: ET.Element, d: DiskSpec) -> None:
    el = _sub(devices, "disk", type=d.source, device=d.device)
    driver = _sub(el, "driver", name="qemu", type=d.format, cache=d.cache)
    if d.io:
        driver.set("io", d.io)
    if d.source == "block":
        _sub(el, "source", dev=d.path)
    else:
        _sub(el, "source", file=d.path)
    _sub(el, "target", dev=d.target, bus=d.bus)
    if d.readonly:
        _sub(el, "readonly")
    if d.serial:
        _sub(el, "serial", d.serial)


def _interface(devices: ET.Element, nic: InterfaceSpec) -> None:
    if nic.kind == "ovs":
        el = _sub(devices, "interface", type="bridge")
        _sub(el, "source", bridge=nic.bridge)
        vp = _sub(el, "virtualport", type="openvswitch")
        if nic.port_id:
            _sub(vp, "parameters", interfaceid=nic.port_id)
        _sub(el, "target", dev=nic.tap)
    else:
        el = _sub(devices, "interface", type="ethernet")
        # managed='no': the agent made the tap (and plugged it) before the guest starts
        _sub(el, "target", dev=nic.tap, managed="no")
    _sub(el, "mac", address=nic.mac)
    _sub(el, "model", type=nic.model)
    if nic.mtu:
        _sub(el, "mtu", size=str(nic.mtu))


def _devices(root: ET.Element, spec: DomainSpec) -> None:
    devices = _sub(root, "devices")
    for d in spec.disks:
        _disk(devices, d)
    for nic in spec.interfaces:
        _interface(devices, nic)
    if spec.serial_log and spec.serial_console:
        # libvirt adds the matching <console>; append: the log keeps every boot for os-getConsoleOutput
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=spec.serial_log, append="on")
        _sub(serial, "target", port="0")
    if spec.video != "none":
        video = _sub(devices, "video")
        _sub(video, "model", type=spec.video)
    if not spec.usb:
        _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="virtio" if spec.memballoon else "none")
    if spec.rng:
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")


def to_element(spec: DomainSpec) -> ET.Element:
    """The domain as an element tree (customize.py patches this before it becomes text)."""
    root = ET.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", spec.uuid)
    if spec.metadata:
        meta = _sub(root, "metadata")
        inst = ET.SubElement(meta, f"{{{CANOPY_NS}}}instance")
        for key, value in spec.metadata:
            ET.SubElement(inst, f"{{{CANOPY_NS}}}{key}").text = value
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus), placement="static")
    _os(root, spec)
    features = _sub(root, "features")
    # ACPI is always on: without it a guest cannot be asked to shut down (it would only halt).
    _sub(features, "acpi")
    _sub(features, "apic")
    _cpu(root, spec.cpu, spec.vcpus)
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    _devices(root, spec)
    return root


def element_to_xml(root: ET.Element) -> str:
    """Indented XML text of a domain element."""
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def to_xml(spec: DomainSpec) -> str:
    """The domain XML libvirt defines."""
    return element_to_xml(to_element(spec))


def interface_xml(nic: InterfaceSpec) -> str:
    """One NIC's <interface> element, for hot-plugging it into (or out of) a defined domain."""
    holder = ET.Element("devices")
    _interface(holder, nic)
    return element_to_xml(holder[0])


def read_metadata(xml: str) -> dict[str, str]:
    """The canopy:instance metadata of a domain's XML ({} for a domain Canopy did not make)."""
    root = ET.fromstring(xml)
    inst = root.find(f"./metadata/{{{CANOPY_NS}}}instance")
    if inst is None:
        return {}
    return {child.tag.split("}", 1)[1]: child.text or "" for child in inst}


def read_taps(xml: str) -> list[tuple[str, str]]:
    """(tap, mac) of each NIC in a domain's XML."""
    root = ET.fromstring(xml)
    found = []
    for nic in root.findall("./devices/interface"):
        target, mac = nic.find("target"), nic.find("mac")
        if target is not None and mac is not None:
            found.append((target.get("dev", ""), mac.get("address", "")))
    return found


def read_serial_log(xml: str) -> str | None:
    """The file the serial console writes to, if any."""
    root = ET.fromstring(xml)
    src = root.find("./devices/serial[@type='file']/source")
    return src.get("path") if src is not None else None
