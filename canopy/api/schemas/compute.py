"""Compute v2.1 response bodies as the OpenStack API reference defines them, per microversion (2.1–2.87).
Fields carry their range (`since`, `until`); `at_version` gives a model at one microversion."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from canopy.api.schemas.base import Body, since, until


class Link(Body):
    rel: str
    href: str


class Resource(Body):
    """An id with its links (an image or, before 2.47, a flavor in a server)."""

    id: str
    links: list[Link]


class Address(Body):
    version: int
    addr: str
    ip_type: str = Field(alias="OS-EXT-IPS:type")
    mac: str | None = Field(alias="OS-EXT-IPS-MAC:mac_addr")


class EmbeddedFlavor(Body):
    """A server's flavor from 2.47 on: a copy of it, not a link."""

    vcpus: int
    ram: int
    disk: int
    ephemeral: int
    swap: int
    original_name: str
    extra_specs: dict[str, str]


class Fault(Body):
    code: int
    created: str
    message: str
    details: str | None = None  # admins, and everyone for faults that are not 500s


class SecurityGroupName(Body):
    name: str


class VolumeAttached(Body):
    id: str
    delete_on_termination: bool = since("2.3")


class Server(Body):
    """GET /servers/{id} and each item of /servers/detail."""

    id: str
    name: str
    status: str
    tenant_id: str
    user_id: str
    metadata: dict[str, str]
    hostId: str
    image: Resource | str  # "" for a server booted from a volume
    flavor_link: Resource = until("2.46", alias="flavor")
    flavor: EmbeddedFlavor = since("2.47")
    created: str
    updated: str
    addresses: dict[str, list[Address]]
    accessIPv4: str
    accessIPv6: str
    links: list[Link]
    disk_config: str = Field(alias="OS-DCF:diskConfig")
    progress: int | None = None  # BUILD and ACTIVE servers only
    availability_zone: str = Field(alias="OS-EXT-AZ:availability_zone")
    config_drive: str
    key_name: str | None
    launched_at: str | None = Field(alias="OS-SRV-USG:launched_at")
    terminated_at: str | None = Field(alias="OS-SRV-USG:terminated_at")
    task_state: str | None = Field(alias="OS-EXT-STS:task_state")
    vm_state: str = Field(alias="OS-EXT-STS:vm_state")
    power_state: int = Field(alias="OS-EXT-STS:power_state")
    volumes_attached: list[VolumeAttached] = Field(alias="os-extended-volumes:volumes_attached")
    security_groups: list[SecurityGroupName] | None = None  # absent without ports
    fault: Fault | None = None
    # Admin-only attributes: absent for others.
    host: str | None = Field(None, alias="OS-EXT-SRV-ATTR:host")
    hypervisor_hostname: str | None = Field(None, alias="OS-EXT-SRV-ATTR:hypervisor_hostname")
    instance_name: str | None = Field(None, alias="OS-EXT-SRV-ATTR:instance_name")
    hostname: str | None = since("2.3", alias="OS-EXT-SRV-ATTR:hostname", default=None)
    host_status: str | None = since("2.16", default=None)
    locked: bool = since("2.9")
    description: str | None = since("2.19")
    tags: list[str] = since("2.26")
    trusted_image_certificates: list[str] | None = since("2.63")
    locked_reason: str | None = since("2.73")


class ServerShown(Server):
    """GET /servers/{id} and PUT's answer: the detail, and from 2.71 the server's groups."""

    server_groups: list[str] = since("2.71")


class ServerDown(Body):
    """A server whose cell does not answer (2.69+): only what the global database knows."""

    id: str
    status: Literal["UNKNOWN"]
    links: list[Link]
    tenant_id: str | None = None
    created: str | None = None


class ServerOne(Body):
    server: ServerShown


class ServerDownOne(Body):
    """GET /servers/{id} of a server whose cell does not answer (2.69+)."""

    server: ServerDown


class ServerDetails(Body):
    servers: list[Server | ServerDown]
    servers_links: list[Link] | None = None


class ServerBrief(Body):
    id: str
    name: str
    links: list[Link]


class ServerList(Body):
    servers: list[ServerBrief | ServerDown]
    servers_links: list[Link] | None = None


class ServerCreated(Body):
    """The 202 of POST /servers: the server's id and links, and its generated password."""

    id: str
    links: list[Link]
    disk_config: str = Field(alias="OS-DCF:diskConfig")
    security_groups: list[SecurityGroupName]
    adminPass: str  # Nova returns it unless the deployment sets enable_instance_password = false


class ServerCreatedOne(Body):
    server: ServerCreated


class Flavor(Body):
    """GET /flavors/{id} and each item of /flavors/detail."""

    id: str
    name: str
    ram: int
    disk: int
    vcpus: int
    links: list[Link]
    ephemeral: int = Field(alias="OS-FLV-EXT-DATA:ephemeral")
    disabled: bool = Field(alias="OS-FLV-DISABLED:disabled")
    is_public: bool = Field(alias="os-flavor-access:is_public")
    swap: int | str = until("2.74")  # "" when there is none, before 2.75
    swap_mb: int = since("2.75", alias="swap")
    rxtx_factor: float | int
    description: str | None = since("2.55")
    extra_specs: dict[str, str] = since("2.61")


class FlavorOne(Body):
    flavor: Flavor


class FlavorDetails(Body):
    flavors: list[Flavor]
    flavors_links: list[Link] | None = None


class FlavorBrief(Body):
    id: str
    name: str
    links: list[Link]
    description: str | None = since("2.55")


class FlavorList(Body):
    flavors: list[FlavorBrief]
    flavors_links: list[Link] | None = None


class Keypair(Body):
    """GET /os-keypairs/{name}."""

    name: str
    public_key: str
    fingerprint: str
    user_id: str
    created_at: str
    deleted: bool
    deleted_at: str | None
    updated_at: str | None
    id: int
    type: str = since("2.2")


class KeypairOne(Body):
    keypair: Keypair


class KeypairCreated(Body):
    name: str
    public_key: str
    fingerprint: str
    user_id: str
    private_key: str | None = None  # only when Nova generated the key
    type: str = since("2.2")


class KeypairCreatedOne(Body):
    keypair: KeypairCreated


class KeypairBrief(Body):
    name: str
    public_key: str
    fingerprint: str
    type: str = since("2.2")


class KeypairItem(Body):
    keypair: KeypairBrief


class KeypairList(Body):
    keypairs: list[KeypairItem]
    keypairs_links: list[Link] | None = since("2.35", default=None)


class AbsoluteLimits(Body):
    maxImageMeta: int = until("2.38")
    maxPersonality: int = until("2.56")
    maxPersonalitySize: int = until("2.56")
    maxSecurityGroupRules: int = until("2.35")
    maxSecurityGroups: int = until("2.35")
    maxServerGroupMembers: int
    maxServerGroups: int
    maxServerMeta: int
    maxTotalCores: int
    maxTotalFloatingIps: int = until("2.35")
    maxTotalInstances: int
    maxTotalKeypairs: int
    maxTotalRAMSize: int
    totalCoresUsed: int
    totalFloatingIpsUsed: int = until("2.35")
    totalInstancesUsed: int
    totalRAMUsed: int
    totalSecurityGroupsUsed: int = until("2.35")
    totalServerGroupsUsed: int


class Limits(Body):
    rate: list[Any] = until("2.38")
    absolute: AbsoluteLimits


class LimitsOne(Body):
    limits: Limits


class ComputeFault(Body):
    code: int
    message: str


def check_compute_error(body: Any) -> None:
    """Nova's error body: one key (badRequest, itemNotFound, ...) holding {code, message}."""
    if not isinstance(body, dict) or len(body) != 1:
        raise ValueError(f"a compute error body has exactly one key: {body!r}")
    ComputeFault.model_validate(next(iter(body.values())))
