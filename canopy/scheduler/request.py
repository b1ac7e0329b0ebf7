"""What one instance asks of the scheduler, in the normalized form the filters read.

The bus message (`SelectHost`) carries the raw pieces (flavor, image properties, hints, networks);
`Request` holds them after normalization, plus what the service looked up for them (the hosts of
the group's members, which racks reach the networks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

EXTRA_SPEC_PREFIX = "aggregate_instance_extra_specs:"
HARD_POLICIES = ("affinity", "anti-affinity")
SOFT_POLICIES = ("soft-affinity", "soft-anti-affinity")
POLICIES = HARD_POLICIES + SOFT_POLICIES
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "i386": "i686", "arm64": "aarch64"}
_VERSION_REQ = re.compile(r"^\s*(>=|<=|==|>|<|=)?\s*(\d+)\s*$")


@dataclass
class GroupState:
    """A server group for one placement: its policy and where its live members are."""

    uuid: str
    policy: str
    max_per_host: int = 1
    members: dict[str, int] = field(default_factory=dict)

    @property
    def hard(self) -> bool:
        return self.policy in HARD_POLICIES

    def add(self, host: str) -> None:
        """Count a member placed in this pass (multi-create), before the database says so."""
        self.members[host] = self.members.get(host, 0) + 1


@dataclass(frozen=True)
class ImageNeeds:
    """What an image's properties demand of a host (Nova's ImagePropertiesFilter)."""

    arch: str | None = None
    hv_type: str | None = None
    hv_version: tuple[str, int] | None = None

    @classmethod
    def from_properties(cls, props: dict[str, object] | None) -> ImageNeeds:
        """Read `hw_architecture`/`architecture`, `img_hv_type`/`hypervisor_type`, `img_hv_requested_version`."""
        props = props or {}
        arch = str(props.get("hw_architecture") or props.get("architecture") or "").strip().lower() or None
        hv = str(props.get("img_hv_type") or props.get("hypervisor_type") or "").strip().lower() or None
        version = None
        raw = props.get("img_hv_requested_version")
        if raw:
            m = _VERSION_REQ.match(str(raw))
            if m:
                version = (m.group(1) or ">=", int(m.group(2)))
        return cls(_ARCH_ALIASES.get(arch, arch) if arch else None, hv, version)

    @property
    def empty(self) -> bool:
        return self.arch is None and self.hv_type is None and self.hv_version is None


@dataclass
class Request:
    """What one instance needs, and where it may or may not go."""

    vcpus: int
    memory_mb: int
    disk_gb: int
    availability_zone: str | None = None
    force_host: str | None = None
    exclude_hosts: tuple[str, ...] = ()
    project_id: str | None = None
    image: ImageNeeds = field(default_factory=ImageNeeds)
    # aggregate_instance_extra_specs:KEY=VALUE pairs from the flavor.
    extra_specs: tuple[tuple[str, str], ...] = ()
    # Hosts named by the `same_host` / `different_host` hints (instance UUIDs resolved to hosts).
    same_host: tuple[str, ...] | None = None
    different_host: tuple[str, ...] = ()
    # For each requested network: the racks that can give an address on it (None: every rack).
    racks: tuple[frozenset[str] | None, ...] = ()
    group: GroupState | None = None

    def class_key(self, tenant_sensitive: bool) -> tuple[object, ...]:
        """What the cacheable filters depend on: requests with the same key share one mask."""
        return (self.availability_zone, self.project_id if tenant_sensitive else None, self.image,
                self.extra_specs, self.racks)


def aggregate_extra_specs(extra_specs: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The flavor's `aggregate_instance_extra_specs:` pairs, which hosts' aggregates must match."""
    return tuple(sorted((k[len(EXTRA_SPEC_PREFIX):], str(v)) for k, v in (extra_specs or {}).items()
                        if k.startswith(EXTRA_SPEC_PREFIX)))
