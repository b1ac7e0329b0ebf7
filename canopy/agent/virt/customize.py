"""Operator customizations of the domain: per host (config), per image (`hw_*` properties) and per flavor
(`hw:*` extra specs), then XPath patch rules for anything the model lacks. Everything is validated
before a disk is made or a domain defined; a bad value is refused with an error naming its source and key.

Precedence, lowest first: built-in defaults, the host's config, the image, the flavor (the operator's
flavor is what the customer bought, so it wins over the customer's image).
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Any

from canopy.agent.virt.base import DriverError
from canopy.agent.virt.domain_model import CpuSpec, DomainSpec, element_to_xml, to_element


class InvalidCustomization(DriverError):
    """A customization the driver refuses; the message names where it came from."""


CPU_MODES = ("none", "host-model", "host-passthrough", "custom")
DISK_BUSES = ("virtio", "scsi", "sata", "ide")
VIF_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet")
VIDEO_MODELS = ("none", "vga", "cirrus", "virtio", "bochs", "qxl")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MACHINE = re.compile(r"^(pc|q35)(-[a-z0-9]+)*(-[0-9]+\.[0-9]+)?$")
_BOOL = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}

# setting → (flavor extra spec, image property)
KEYS = {
    "cpu_mode": ("hw:cpu_mode", "hw_cpu_mode"),
    "cpu_model": ("hw:cpu_model", "hw_cpu_model"),
    "cpu_features": ("hw:cpu_features", "hw_cpu_features"),
    "machine_type": ("hw:machine_type", "hw_machine_type"),
    "disk_bus": ("hw:disk_bus", "hw_disk_bus"),
    "vif_model": ("hw:vif_model", "hw_vif_model"),
    "video_model": ("hw:video_model", "hw_video_model"),
    "serial_console": ("hw:serial_console", "hw_serial_console"),
}


@dataclass(frozen=True, slots=True)
class Customization:
    """The resolved settings for one guest."""

    cpu_mode: str | None = None  # None: the accelerator's default (host-model on KVM, none on TCG)
    cpu_model: str | None = None
    cpu_features: tuple[tuple[str, str], ...] = ()
    machine_type: str = "pc"
    disk_bus: str = "virtio"
    vif_model: str = "virtio"
    video_model: str = "none"
    serial_console: bool = True


@dataclass(frozen=True, slots=True)
class PatchRule:
    """One XPath patch: `set` an attribute (or the text) of every match, `add` an XML fragment under every
    match, or `remove` every match. A rule that matches nothing is an error unless `optional`."""

    op: str
    xpath: str
    value: str | None = None
    attribute: str | None = None
    xml: str | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class HostCustomization:
    """What a host's config sets: defaults for the settings above, and patch rules."""

    defaults: dict[str, str] = field(default_factory=dict)
    patches: tuple[PatchRule, ...] = ()


def _check(setting: str, value: str, where: str) -> Any:
    """Parse and validate one setting's value; `where` names the source for the error."""
    def bad(why: str) -> InvalidCustomization:
        return InvalidCustomization(f"invalid customization {where}={value!r}: {why}")

    if setting == "cpu_mode":
        if value not in CPU_MODES:
            raise bad(f"must be one of {', '.join(CPU_MODES)}")
        return value
    if setting == "cpu_model":
        if not _NAME.match(value):
            raise bad("a CPU model name has letters, digits, '_', '.' and '-' only")
        return value
    if setting == "cpu_features":
        return _features(value, bad)
    if setting == "machine_type":
        if not _MACHINE.match(value):
            raise bad("must be an x86 machine type such as pc, q35 or pc-i440fx-7.2")
        return value
    if setting == "disk_bus":
        if value not in DISK_BUSES:
            raise bad(f"must be one of {', '.join(DISK_BUSES)}")
        return value
    if setting == "vif_model":
        if value not in VIF_MODELS:
            raise bad(f"must be one of {', '.join(VIF_MODELS)}")
        return value
    if setting == "video_model":
        if value not in VIDEO_MODELS:
            raise bad(f"must be one of {', '.join(VIDEO_MODELS)}")
        return value
    if setting == "serial_console":
        if value.lower() not in _BOOL:
            raise bad("must be true or false")
        return _BOOL[value.lower()]
    raise bad("unknown setting")


def _features(value: str, bad: Any) -> tuple[tuple[str, str], ...]:
    """'+avx2,-svm,aes' → ((require, avx2), (disable, svm), (require, aes))."""
    out: list[tuple[str, str]] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        policy = "disable" if item.startswith("-") else "require"
        name = item.lstrip("+-")
        if not _NAME.match(name):
            raise bad(f"CPU feature {name!r} is not a feature name")
        out.append((policy, name))
    if len(out) > 64:
        raise bad("at most 64 CPU features")
    return tuple(out)


def resolve(host: HostCustomization, image_props: dict[str, Any], extra_specs: dict[str, str]) -> Customization:
    """Merge host defaults, image properties and flavor extra specs into one validated Customization."""
    values: dict[str, Any] = {}
    for setting, (spec_key, prop_key) in KEYS.items():
        sources = (("host config", f"defaults.{setting}", host.defaults.get(setting)),
                   ("image property", prop_key, image_props.get(prop_key)),
                   ("flavor extra spec", spec_key, extra_specs.get(spec_key)))
        for what, key, raw in sources:
            if raw is not None:
                values[setting] = _check(setting, str(raw), f"{what} {key}")
    unknown = set(host.defaults) - set(KEYS)
    if unknown:
        raise InvalidCustomization(f"invalid customization in host config: unknown settings {sorted(unknown)}")
    result = Customization(**values)
    _cross_check(result)
    return result


def _cross_check(c: Customization) -> None:
    if c.cpu_mode == "custom" and not c.cpu_model:
        raise InvalidCustomization("invalid customization: cpu_mode custom needs a CPU model (hw:cpu_model)")
    if c.cpu_model and c.cpu_mode not in (None, "custom"):
        raise InvalidCustomization(f"invalid customization: a CPU model ({c.cpu_model}) needs cpu_mode custom, "
                                   f"not {c.cpu_mode}")
    q35 = c.machine_type.startswith("q35") or "-q35-" in c.machine_type
    if q35 and c.disk_bus == "ide":
        raise InvalidCustomization("invalid customization: the q35 machine type has no IDE bus (hw:disk_bus)")
    if not q35 and c.disk_bus == "sata" and c.machine_type.startswith("pc"):
        raise InvalidCustomization("invalid customization: the pc (i440fx) machine type has no SATA bus "
                                   "(hw:disk_bus); use q35")


def check_for_host(c: Customization, accel: str, cpu_models: set[str] | None, machines: set[str] | None) -> None:
    """Refuse what this host cannot run: host-passthrough without KVM, unknown CPU models and machine types."""
    if c.cpu_mode in ("host-passthrough", "host-model") and accel != "kvm":
        raise InvalidCustomization(f"invalid customization: cpu_mode {c.cpu_mode} needs KVM, and this host runs "
                                   f"guests with {accel.upper()}")
    if c.cpu_model and cpu_models is not None and c.cpu_model not in cpu_models:
        raise InvalidCustomization(f"invalid customization: CPU model {c.cpu_model!r} is not offered by this "
                                   "host's hypervisor")
    if machines is not None and c.machine_type not in machines:
        raise InvalidCustomization(f"invalid customization: machine type {c.machine_type!r} is not offered by "
                                   "this host's hypervisor")


def apply(spec: DomainSpec, c: Customization, accel: str) -> DomainSpec:
    """The domain description with the customization applied."""
    mode = c.cpu_mode or ("host-model" if accel == "kvm" else "none")
    cpu = CpuSpec(mode=mode, model=c.cpu_model, features=c.cpu_features)
    disks = tuple(replace(d, bus=c.disk_bus) if d.device == "disk" else d for d in spec.disks)
    nics = tuple(replace(n, model=c.vif_model) for n in spec.interfaces)
    return replace(spec, cpu=cpu, machine=c.machine_type, disks=disks, interfaces=nics, video=c.video_model,
                   serial_console=c.serial_console)


# -- patch rules ------------------------------------------------------------------------------------

PATCH_OPS = ("set", "add", "remove")
# What a patch may never take away: management needs the name and uuid, clean shutdown needs ACPI.
_PROTECTED = ("./name", "./uuid", "./features/acpi")


def parse_patch(raw: dict[str, Any], index: int) -> PatchRule:
    """Validate one patch rule from config (a table with op, xpath, and value/attribute or xml)."""
    where = f"libvirt patch rule #{index + 1}"
    unknown = set(raw) - {"op", "xpath", "value", "attribute", "xml", "optional"}
    if unknown:
        raise InvalidCustomization(f"{where}: unknown keys {sorted(unknown)}")
    rule = PatchRule(**raw)
    if rule.op not in PATCH_OPS:
        raise InvalidCustomization(f"{where}: op must be one of {', '.join(PATCH_OPS)}, not {rule.op!r}")
    if not rule.xpath.startswith("."):
        raise InvalidCustomization(f"{where}: xpath must be relative to <domain> (start with '.'): {rule.xpath!r}")
    try:
        ET.Element("domain").findall(rule.xpath)
    except (SyntaxError, KeyError, TypeError, ValueError) as exc:  # ElementPath fails in several ways
        raise InvalidCustomization(f"{where}: xpath {rule.xpath!r} is not valid: {exc}") from exc
    if rule.op == "set" and rule.value is None:
        raise InvalidCustomization(f"{where}: set needs a value")
    if rule.op == "add":
        if not rule.xml:
            raise InvalidCustomization(f"{where}: add needs an xml fragment")
        try:
            ET.fromstring(rule.xml)
        except ET.ParseError as exc:
            raise InvalidCustomization(f"{where}: xml fragment is not well-formed: {exc}") from exc
    if rule.op == "remove" and rule.xpath.rstrip("/") in _PROTECTED:
        raise InvalidCustomization(f"{where}: {rule.xpath} may not be removed")
    return rule


def apply_patches(root: ET.Element, rules: tuple[PatchRule, ...]) -> ET.Element:
    """A patched copy of the domain element; refuses a rule that matches nothing or removes what must stay."""
    root = copy.deepcopy(root)
    name, uuid = root.findtext("name"), root.findtext("uuid")
    for index, rule in enumerate(rules):
        where = f"libvirt patch rule #{index + 1} ({rule.op} {rule.xpath})"
        matches = [root] if rule.xpath == "." else root.findall(rule.xpath)
        if not matches and not rule.optional:
            raise InvalidCustomization(f"{where} matched nothing in the domain XML")
        if rule.op == "set":
            for el in matches:
                if rule.attribute:
                    el.set(rule.attribute, rule.value or "")
                else:
                    el.text = rule.value
        elif rule.op == "add":
            for el in matches:
                el.append(ET.fromstring(rule.xml or ""))
        else:
            parents = {child: parent for parent in root.iter() for child in parent}
            for el in matches:
                if el is root:
                    raise InvalidCustomization(f"{where}: the domain itself may not be removed")
                parents[el].remove(el)
    if root.find("./features/acpi") is None:
        raise InvalidCustomization("libvirt patch rules removed ACPI; a guest without it cannot shut down cleanly")
    if root.findtext("name") != name or root.findtext("uuid") != uuid:
        raise InvalidCustomization("libvirt patch rules may not change the domain's name or uuid")
    return root


def build_xml(spec: DomainSpec, c: Customization, accel: str, patches: tuple[PatchRule, ...]) -> str:
    """The final domain XML: model → customization → patch rules."""
    return element_to_xml(apply_patches(to_element(apply(spec, c, accel)), patches))
