"""Table tests of the domain model (description → XML) and of every customization, including refusals."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from canopy.agent.virt import customize
from canopy.agent.virt.customize import (
    Customization,
    HostCustomization,
    InvalidCustomization,
    PatchRule,
    apply_patches,
    build_xml,
    parse_patch,
    resolve,
)
from canopy.agent.virt.domain_model import (
    DiskSpec,
    DomainSpec,
    InterfaceSpec,
    read_metadata,
    read_serial_log,
    read_taps,
    to_element,
    to_xml,
)

UUID = "0f6c3c52-8a2f-4b8e-9d0e-3d1b3a9e0c11"


def spec(**kw: object) -> DomainSpec:
    base: dict[str, object] = dict(
        name=f"canopy-{UUID}", uuid=UUID, memory_mib=256, vcpus=2, domain_type="qemu",
        kernel="/b/kernel", initrd="/b/initrd", cmdline="console=ttyS0",
        disks=(DiskSpec(path="/i/disk", target="vda"),
               DiskSpec(path="/i/disk.config", target="vdb", format="raw", readonly=True)),
        interfaces=(InterfaceSpec(mac="fa:16:3e:00:00:01", tap="tap0123456789a", port_id="p1"),),
        serial_log="/i/console.log", metadata=(("uuid", UUID), ("hostname", "web-1")))
    base.update(kw)
    return DomainSpec(**base)  # type: ignore[arg-type]


def find(xml: str, path: str) -> ET.Element:
    el = ET.fromstring(xml).find(path)
    assert el is not None, f"{path} not in\n{xml}"
    return el


# -- the model ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "attr", "expected"), [
    (".", "type", "qemu"),
    ("./name", None, f"canopy-{UUID}"),
    ("./uuid", None, UUID),
    ("./memory", "unit", "MiB"),
    ("./memory", None, "256"),
    ("./vcpu", None, "2"),
    ("./os/type", "machine", "pc"),
    ("./os/kernel", None, "/b/kernel"),
    ("./os/initrd", None, "/b/initrd"),
    ("./os/cmdline", None, "console=ttyS0"),
    ("./on_poweroff", None, "destroy"),
    ("./devices/disk[1]/source", "file", "/i/disk"),
    ("./devices/disk[1]/driver", "type", "qcow2"),
    ("./devices/disk[1]/target", "bus", "virtio"),
    ("./devices/disk[2]/driver", "type", "raw"),
    ("./devices/interface", "type", "ethernet"),
    ("./devices/interface/target", "dev", "tap0123456789a"),
    ("./devices/interface/target", "managed", "no"),
    ("./devices/interface/mac", "address", "fa:16:3e:00:00:01"),
    ("./devices/interface/model", "type", "virtio"),
    ("./devices/serial", "type", "file"),
    ("./devices/serial/source", "path", "/i/console.log"),
    ("./devices/serial/source", "append", "on"),
    ("./devices/controller[@type='usb']", "model", "none"),
    ("./devices/memballoon", "model", "none"),
])
def test_model_renders(path: str, attr: str | None, expected: str) -> None:
    el = find(to_xml(spec()), path)
    assert (el.get(attr) if attr else el.text) == expected


def test_acpi_is_always_on_and_readonly_config_drive() -> None:
    xml = to_xml(spec())
    find(xml, "./features/acpi")
    assert find(xml, "./devices/disk[2]/readonly") is not None


def test_ovs_interface_and_boot_from_disk() -> None:
    s = spec(kernel=None, interfaces=(InterfaceSpec(mac="fa:16:3e:00:00:02", tap="tapx", kind="ovs",
                                                    bridge="br-int", port_id="port-1"),))
    xml = to_xml(s)
    assert find(xml, "./devices/interface").get("type") == "bridge"
    assert find(xml, "./devices/interface/source").get("bridge") == "br-int"
    assert find(xml, "./devices/interface/virtualport").get("type") == "openvswitch"
    assert find(xml, "./devices/interface/virtualport/parameters").get("interfaceid") == "port-1"
    assert find(xml, "./os/boot").get("dev") == "hd"
    assert ET.fromstring(xml).find("./os/kernel") is None


def test_readers_of_domain_xml() -> None:
    xml = to_xml(spec())
    assert read_metadata(xml) == {"uuid": UUID, "hostname": "web-1"}
    assert read_taps(xml) == [("tap0123456789a", "fa:16:3e:00:00:01")]
    assert read_serial_log(xml) == "/i/console.log"
    assert read_metadata(to_xml(spec(metadata=()))) == {}


def test_no_serial_when_serial_console_off() -> None:
    xml = to_xml(spec(serial_console=False))
    assert ET.fromstring(xml).find("./devices/serial") is None
    assert read_serial_log(xml) is None


# -- customizations: each one, from flavor, image and host ----------------------------------------

@pytest.mark.parametrize(("source", "key", "value", "path", "attr", "expected"), [
    ("flavor", "hw:cpu_mode", "custom", "./cpu", "mode", "custom"),
    ("flavor", "hw:machine_type", "q35", "./os/type", "machine", "q35"),
    ("image", "hw_machine_type", "pc-i440fx-7.2", "./os/type", "machine", "pc-i440fx-7.2"),
    ("flavor", "hw:disk_bus", "scsi", "./devices/disk[1]/target", "bus", "scsi"),
    ("image", "hw_disk_bus", "ide", "./devices/disk[1]/target", "bus", "ide"),
    ("flavor", "hw:vif_model", "e1000", "./devices/interface/model", "type", "e1000"),
    ("image", "hw_vif_model", "rtl8139", "./devices/interface/model", "type", "rtl8139"),
    ("flavor", "hw:video_model", "virtio", "./devices/video/model", "type", "virtio"),
    ("image", "hw_video_model", "vga", "./devices/video/model", "type", "vga"),
    ("host", "vif_model", "e1000e", "./devices/interface/model", "type", "e1000e"),
    ("host", "machine_type", "q35", "./os/type", "machine", "q35"),
])
def test_each_customization(source: str, key: str, value: str, path: str, attr: str, expected: str) -> None:
    host = HostCustomization({key: value}) if source == "host" else HostCustomization()
    image = {key: value} if source == "image" else {}
    flavor = {key: value} if source == "flavor" else {}
    if key == "hw:cpu_mode":
        flavor["hw:cpu_model"] = "Haswell"
    if value == "q35":  # q35 has no IDE; keep the default virtio bus
        pass
    c = resolve(host, image, flavor)
    xml = build_xml(spec(), c, "tcg", ())
    assert find(xml, path).get(attr) == expected


def test_cpu_model_and_features() -> None:
    c = resolve(HostCustomization(), {}, {"hw:cpu_mode": "custom", "hw:cpu_model": "Haswell-noTSX",
                                         "hw:cpu_features": "+avx2, -svm,aes"})
    xml = build_xml(spec(), c, "kvm", ())
    assert find(xml, "./cpu").get("match") == "exact"
    assert find(xml, "./cpu/model").text == "Haswell-noTSX"
    features = [(f.get("policy"), f.get("name")) for f in ET.fromstring(xml).findall("./cpu/feature")]
    assert features == [("require", "avx2"), ("disable", "svm"), ("require", "aes")]


def test_serial_console_off_from_image() -> None:
    c = resolve(HostCustomization(), {"hw_serial_console": "false"}, {})
    assert ET.fromstring(build_xml(spec(), c, "tcg", ())).find("./devices/serial") is None


@pytest.mark.parametrize(("accel", "mode"), [("kvm", "host-model"), ("tcg", None)])
def test_default_cpu_mode_follows_the_accelerator(accel: str, mode: str | None) -> None:
    cpu = ET.fromstring(build_xml(spec(), Customization(), accel, ())).find("./cpu")
    assert (cpu.get("mode") if cpu is not None else None) == mode


def test_precedence_flavor_over_image_over_host() -> None:
    host = HostCustomization({"vif_model": "e1000"})
    assert resolve(host, {}, {}).vif_model == "e1000"
    assert resolve(host, {"hw_vif_model": "rtl8139"}, {}).vif_model == "rtl8139"
    assert resolve(host, {"hw_vif_model": "rtl8139"}, {"hw:vif_model": "virtio"}).vif_model == "virtio"


@pytest.mark.parametrize(("host", "image", "flavor", "message"), [
    ({}, {}, {"hw:cpu_mode": "turbo"}, "flavor extra spec hw:cpu_mode='turbo': must be one of"),
    ({}, {"hw_disk_bus": "floppy"}, {}, "image property hw_disk_bus='floppy'"),
    ({}, {}, {"hw:vif_model": "vmxnet9"}, "hw:vif_model='vmxnet9'"),
    ({}, {}, {"hw:video_model": "voodoo"}, "hw:video_model='voodoo'"),
    ({}, {}, {"hw:machine_type": "virt"}, "machine type"),
    ({}, {}, {"hw:serial_console": "maybe"}, "must be true or false"),
    ({}, {}, {"hw:cpu_features": "+avx2;rm -rf"}, "is not a feature name"),
    ({}, {}, {"hw:cpu_model": "Haswell; reboot"}, "CPU model name"),
    ({}, {}, {"hw:cpu_mode": "custom"}, "cpu_mode custom needs a CPU model"),
    ({}, {}, {"hw:cpu_mode": "host-model", "hw:cpu_model": "Haswell"}, "needs cpu_mode custom"),
    ({}, {}, {"hw:machine_type": "q35", "hw:disk_bus": "ide"}, "q35 machine type has no IDE"),
    ({}, {}, {"hw:machine_type": "pc", "hw:disk_bus": "sata"}, "no SATA bus"),
    ({"turbo": "on"}, {}, {}, "unknown setting"),
])
def test_refused_customizations(host: dict[str, str], image: dict[str, str], flavor: dict[str, str],
                                message: str) -> None:
    with pytest.raises(InvalidCustomization, match=message.replace("(", r"\(").replace("+", r"\+")):
        resolve(HostCustomization(host), image, flavor)


@pytest.mark.parametrize(("custom", "accel", "models", "machines", "message"), [
    (Customization(cpu_mode="host-passthrough"), "tcg", None, None, "host-passthrough needs KVM"),
    (Customization(cpu_mode="custom", cpu_model="Nehalem"), "kvm", {"Haswell"}, None, "not offered"),
    (Customization(machine_type="pc-q35-1.0"), "kvm", None, {"pc", "q35"}, "machine type"),
])
def test_refused_for_this_host(custom: Customization, accel: str, models: set[str] | None,
                               machines: set[str] | None, message: str) -> None:
    with pytest.raises(InvalidCustomization, match=message):
        customize.check_for_host(custom, accel, models, machines)


def test_host_passthrough_on_kvm_is_fine() -> None:
    customize.check_for_host(Customization(cpu_mode="host-passthrough"), "kvm", None, None)


# -- XPath patch rules ----------------------------------------------------------------------------

def test_patch_set_add_remove() -> None:
    rules = (
        parse_patch({"op": "set", "xpath": "./devices/disk[@device='disk']/driver", "attribute": "cache",
                     "value": "writeback"}, 0),
        parse_patch({"op": "add", "xpath": "./devices", "xml": "<watchdog model='i6300esb' action='reset'/>"}, 1),
        parse_patch({"op": "remove", "xpath": "./devices/rng"}, 2),
        parse_patch({"op": "set", "xpath": "./devices/serial/target", "attribute": "port", "value": "0"}, 3),
    )
    xml = build_xml(spec(), Customization(), "tcg", rules)
    assert find(xml, "./devices/disk[1]/driver").get("cache") == "writeback"
    assert find(xml, "./devices/watchdog").get("model") == "i6300esb"
    assert ET.fromstring(xml).find("./devices/rng") is None


@pytest.mark.parametrize(("raw", "message"), [
    ({"op": "replace", "xpath": "./devices"}, "op must be one of"),
    ({"op": "set", "xpath": "/domain/devices", "value": "x"}, "must be relative"),
    ({"op": "set", "xpath": "./devices[", "value": "x"}, "is not valid"),
    ({"op": "set", "xpath": "./devices"}, "set needs a value"),
    ({"op": "add", "xpath": "./devices", "xml": "<oops"}, "not well-formed"),
    ({"op": "remove", "xpath": "./features/acpi"}, "may not be removed"),
    ({"op": "set", "xpath": "./devices", "value": "x", "colour": "red"}, "unknown keys"),
])
def test_refused_patch_rules(raw: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidCustomization, match=message):
        parse_patch(raw, 0)


def test_patch_that_matches_nothing_is_refused_unless_optional() -> None:
    root = to_element(spec())
    with pytest.raises(InvalidCustomization, match="matched nothing"):
        apply_patches(root, (PatchRule("set", "./devices/tpm", value="x"),))
    apply_patches(root, (PatchRule("set", "./devices/tpm", value="x", optional=True),))


def test_patches_may_not_drop_acpi_or_rename() -> None:
    root = to_element(spec())
    with pytest.raises(InvalidCustomization, match="removed ACPI"):
        apply_patches(root, (PatchRule("remove", "./features"),))
    with pytest.raises(InvalidCustomization, match="name or uuid"):
        apply_patches(root, (PatchRule("set", "./name", value="other"),))
    assert root.find("./features/acpi") is not None  # the original is untouched
