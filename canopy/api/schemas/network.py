"""Network v2.0 response bodies as the Networking API reference defines them, and Neutron's error body."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from canopy.api.schemas.base import Body


class Link(Body):
    rel: str
    href: str


class Network(Body):
    id: str
    name: str
    project_id: str
    tenant_id: str
    description: str
    status: str
    admin_state_up: bool
    shared: bool
    external: bool = Field(alias="router:external")
    mtu: int
    subnets: list[str]
    port_security_enabled: bool
    availability_zone_hints: list[str]
    availability_zones: list[str]
    ipv4_address_scope: str | None
    ipv6_address_scope: str | None
    qos_policy_id: str | None
    is_default: bool | None = None  # external networks
    tags: list[str]
    created_at: str
    updated_at: str
    revision_number: int
    # Provider attributes: admins only.
    network_type: str | None = Field(None, alias="provider:network_type")
    physical_network: str | None = Field(None, alias="provider:physical_network")
    segmentation_id: int | None = Field(None, alias="provider:segmentation_id")


class AllocationPool(Body):
    start: str
    end: str


class HostRoute(Body):
    destination: str
    nexthop: str


class Subnet(Body):
    id: str
    name: str
    network_id: str
    project_id: str
    tenant_id: str
    description: str
    ip_version: int
    cidr: str
    gateway_ip: str | None
    allocation_pools: list[AllocationPool]
    dns_nameservers: list[str]
    host_routes: list[HostRoute]
    enable_dhcp: bool
    segment_id: str | None
    ipv6_ra_mode: str | None
    ipv6_address_mode: str | None
    subnetpool_id: str | None
    service_types: list[str]
    tags: list[str]
    created_at: str
    updated_at: str
    revision_number: int


class FixedIp(Body):
    subnet_id: str
    ip_address: str


class AddressPair(Body):
    ip_address: str
    mac_address: str


class Port(Body):
    id: str
    name: str
    network_id: str
    project_id: str
    tenant_id: str
    mac_address: str
    fixed_ips: list[FixedIp]
    device_id: str
    device_owner: str
    status: str
    admin_state_up: bool
    allowed_address_pairs: list[AddressPair]
    port_security_enabled: bool
    security_groups: list[str]
    extra_dhcp_opts: list[dict[str, Any]]
    qos_policy_id: str | None
    qos_network_policy_id: str | None
    description: str
    tags: list[str]
    created_at: str
    updated_at: str
    revision_number: int
    # Binding attributes: admins only.
    host_id: str | None = Field(None, alias="binding:host_id")
    vif_type: str | None = Field(None, alias="binding:vif_type")
    vnic_type: str | None = Field(None, alias="binding:vnic_type")
    profile: dict[str, Any] | None = Field(None, alias="binding:profile")
    vif_details: dict[str, Any] | None = Field(None, alias="binding:vif_details")


class NetworkOne(Body):
    network: Network


class Networks(Body):
    networks: list[Network]
    networks_links: list[Link] | None = None


class SubnetOne(Body):
    subnet: Subnet


class Subnets(Body):
    subnets: list[Subnet]
    subnets_links: list[Link] | None = None


class PortOne(Body):
    port: Port


class Ports(Body):
    ports: list[Port]
    ports_links: list[Link] | None = None


class NeutronFault(Body):
    type: str
    message: str
    detail: str


class NeutronError(Body):
    """Every error of the network API."""

    NeutronError: NeutronFault


class Extension(Body):
    alias: str
    name: str
    description: str
    updated: str
    links: list[Link]


class ExtensionOne(Body):
    extension: Extension


class Extensions(Body):
    extensions: list[Extension]


class VersionItem(Body):
    id: str
    status: str
    links: list[Link]


class Versions(Body):
    versions: list[VersionItem]


class ResourceItem(Body):
    name: str
    collection: str
    links: list[Link]


class Resources(Body):
    resources: list[ResourceItem]
