"""The typed messages the control services and agents exchange (one class per call)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from canopy.rpc.messages import Message
from canopy.rpc.tasks import TaskRecord

# -- to conductors ---------------------------------------------------------------------------------


class WakeTask(Message):
    """A durable task row is waiting; the conductor that leases it runs it.

    Version 2 types `task` (a TaskRecord with a versioned payload); a version-1 body's dict is read
    into the same record, its payload upgraded from version 1."""

    kind: ClassVar[str] = "wake_task"
    version: ClassVar[int] = 2
    task_id: int
    instance_uuid: str
    task_kind: str
    # The task row as written, so the conductor need not read it back; the row stays the truth.
    task: TaskRecord | None = None


class RegisterHost(Message):
    """An agent announces its host, its capacity and its hypervisor (call; the reply is an Ack).

    Version 2 adds the accelerator guests run with (kvm, tcg; "" for a simulated host) and cpu_info."""

    kind: ClassVar[str] = "register_host"
    version: ClassVar[int] = 2
    host: str
    hypervisor_type: str
    hypervisor_version: int
    host_ip: str | None = None
    vcpus: int
    memory_mb: int
    local_gb: int
    availability_zone: str = "nova"
    datacenter: str = "dc1"
    rack: str = ""
    service_version: str = ""
    accelerator: str = ""
    cpu_info: dict[str, Any] = Field(default_factory=dict)


class Heartbeat(Message):
    """A service is alive (cast; conductors write heartbeats to the database in batches).

    `health` (agents): the host's failing checks, name -> short detail; empty when every check passed.
    Optional with a default, so heartbeats of agents that do not send it are read as before."""

    kind: ClassVar[str] = "heartbeat"
    binary: str
    host: str
    service_version: str = ""
    sent_at: float
    health: dict[str, str] = Field(default_factory=dict)


# -- to schedulers ---------------------------------------------------------------------------------


class SelectHost(Message):
    """Pick a host for one instance and claim its resources there (call; reply: HostSelected).

    Version 2 adds what the filters need beyond the flavor: image properties, aggregate extra specs,
    networks, the server group and the same_host/different_host hints, and the multi-create batch
    (`reservation_id`, `batch_size`) a scheduler may place in one pass."""

    kind: ClassVar[str] = "select_host"
    version: ClassVar[int] = 2
    instance_uuid: str
    project_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    availability_zone: str | None = None
    force_host: str | None = None
    exclude_hosts: list[str] = Field(default_factory=list)
    image_properties: dict[str, Any] = Field(default_factory=dict)
    flavor_extra_specs: dict[str, str] = Field(default_factory=dict)
    network_ids: list[str] = Field(default_factory=list)
    group: dict[str, Any] | None = None  # {"uuid", "policy", "rules"}
    same_host: list[str] = Field(default_factory=list)  # instance UUIDs
    different_host: list[str] = Field(default_factory=list)
    reservation_id: str = ""
    batch_size: int = 1


class HostSelected(Message):
    kind: ClassVar[str] = "host_selected"
    host: str
    availability_zone: str


class ExplainPlacement(Message):
    """Say where an instance would go and why each other host would not, without claiming (call;
    reply: PlacementExplained). The request has SelectHost's fields."""

    kind: ClassVar[str] = "explain_placement"
    request: SelectHost
    top: int = 5


class PlacementExplained(Message):
    kind: ClassVar[str] = "placement_explained"
    explanation: dict[str, Any]


# -- to agents -------------------------------------------------------------------------------------


class PortSpec(Message):
    """A port as the agent needs it: to plug the guest's NIC and to tell the guest its addresses."""

    kind: ClassVar[str] = "port_spec"
    id: str
    mac_address: str
    network_id: str
    fixed_ips: list[dict[str, Any]] = Field(default_factory=list)
    # The subnets of the fixed IPs (cidr, gateway_ip, dns_nameservers, host_routes): the config drive
    # tells the guest its static addressing from them. Optional, so older senders still validate.
    subnets: list[dict[str, Any]] = Field(default_factory=list)
    mtu: int | None = None


class InstanceSpec(Message):
    """Everything an agent needs to create a guest; it never reads the database."""

    kind: ClassVar[str] = "instance_spec"
    uuid: str
    name: str
    hostname: str
    project_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image_id: str
    flavor_extra_specs: dict[str, str] = Field(default_factory=dict)
    ports: list[PortSpec] = Field(default_factory=list)
    key_data: str | None = None
    user_data: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    admin_pass: str | None = None  # the config drive's admin_pass, for the guest to set


class SpawnInstance(Message):
    kind: ClassVar[str] = "spawn_instance"
    instance: InstanceSpec


class PowerAction(Message):
    """start, stop (clean then hard), stop_soft, stop_hard, reboot_soft, reboot_hard, pause, unpause,
    suspend, resume (an agent that predates an action answers that it does not know it)."""

    kind: ClassVar[str] = "power_action"
    instance_uuid: str
    action: str
    timeout_s: float = 60.0


class AttachInterface(Message):
    """Agent: add the port's NIC to the guest (its flows are already on the host); reply Ack."""

    kind: ClassVar[str] = "attach_interface"
    instance_uuid: str
    port: PortSpec


class DetachInterface(Message):
    """Agent: remove the port's NIC from the guest and its tap; reply Ack."""

    kind: ClassVar[str] = "detach_interface"
    instance_uuid: str
    port_id: str


class DestroyInstance(Message):
    kind: ClassVar[str] = "destroy_instance"
    instance_uuid: str


class StepResult(Message):
    """One step an agent took for a request, recorded as an instance action event."""

    kind: ClassVar[str] = "step_result"
    event: str
    result: str
    details: str = ""


class InstanceState(Message):
    """An agent's reply: the guest's power state afterwards, and the steps it took."""

    kind: ClassVar[str] = "instance_state"
    instance_uuid: str
    power_state: int
    steps: list[StepResult] = Field(default_factory=list)


# -- liveness (any service) ------------------------------------------------------------------------


class Ping(Message):
    """A live round trip (call; reply: Pong). To a conductor with `host` set, the conductor relays it to
    that host's agent, so a process that reaches only the control services can ping any agent."""

    kind: ClassVar[str] = "ping"
    host: str | None = None


class Pong(Message):
    """Who answered a Ping: its binary, host, version and uptime; `relay_ms` is the conductor→agent leg."""

    kind: ClassVar[str] = "pong"
    binary: str
    host: str
    service_version: str
    uptime_s: float = 0.0
    relay_ms: float | None = None
    relayed_by: str | None = None


# -- network: desired network state for agents, in batches (issue 4) --------------------------------


class NetSegment(Message):
    """A network (or one segment of a routed network) that a host's ports are on."""

    kind: ClassVar[str] = "net_segment"
    network_id: str
    segment_id: str | None = None
    network_type: str  # flat | vxlan
    physical_network: str | None = None
    segmentation_id: int | None = None
    mtu: int = 1500
    # Hosts answer ARP for every address of the segment (and hold its ports as neighbors); True for a
    # conductor that predates the option, as it always was then
    arp_responder: bool = True


class NetPort(Message):
    """A port bound to the receiving host: what its flows and its tap depend on."""

    kind: ClassVar[str] = "net_port"
    id: str
    network_id: str
    segment_id: str | None = None
    mac_address: str
    ofport: int
    fixed_ips: list[str] = Field(default_factory=list)
    allowed_address_pairs: list[dict[str, str]] = Field(default_factory=list)
    port_security_enabled: bool = True
    admin_state_up: bool = True
    # QoS bandwidth_limit rules in force: [{"direction": "egress"|"ingress", "max_kbps", "max_burst_kbps"}]
    bandwidth_limits: list[dict[str, Any]] = Field(default_factory=list)
    device_id: str = ""
    project_id: str = ""
    rev: float = 0.0  # the port's updated_at (epoch seconds): a receiver keeps the newest
    security_groups: list[str] | None = None  # None: no firewall (a sender from before security groups)


class NetSecGroup(Message):
    """A security group with its rules, as the compiler takes them: each rule a dict of SgRule's fields
    (mark, direction, ethertype 4|6, protocol number or None, port_min, port_max, prefix, remote_group, id)."""

    kind: ClassVar[str] = "net_sec_group"
    id: str
    tag: int
    name: str = ""
    rules: list[dict[str, Any]] = Field(default_factory=list)


class NetNeighbor(Message):
    """A port on another host of a segment the receiving host serves (ARP responder, tunnel endpoint)."""

    kind: ClassVar[str] = "net_neighbor"
    port_id: str
    network_id: str
    segment_id: str | None = None
    mac_address: str
    ips: list[str] = Field(default_factory=list)
    host: str = ""
    tunnel_ip: str | None = None
    rev: float = 0.0


# A NetNeighbor as a row: (port_id, network_id, segment_id, mac_address, ips, host, tunnel_ip, rev).
NeighborRow = tuple[str, str, str | None, str, list[str], str, str | None, float]


class NetworkSync(Message):
    """The desired network state of one host: complete (`full`), or the changes since the last one.
    A full sync is the reply to RequestNetworkSync; changes are cast in batches by conductors."""

    kind: ClassVar[str] = "network_sync"
    host: str
    full: bool = False
    segments: list[NetSegment] = Field(default_factory=list)
    ports: list[NetPort] = Field(default_factory=list)
    removed_ports: list[str] = Field(default_factory=list)
    neighbors: list[NetNeighbor] = Field(default_factory=list)
    removed_neighbors: list[str] = Field(default_factory=list)
    # Networks whose complete neighbor list is in `neighbors` (a host's first port on a network).
    complete_networks: list[str] = Field(default_factory=list)
    tunnel_ip: str | None = None  # the host's own address, as the control plane knows it
    sent_at: float = 0.0
    # More neighbors, as rows: what `neighbors` says, in the compact form conductors use for the long
    # lists (a network's neighbors, a round of neighbor changes). Agents merge both.
    neighbor_rows: list[NeighborRow] = Field(default_factory=list)
    # Security groups (new or changed definitions) and the member addresses of remote groups (complete
    # lists of the groups named; with `full`, every group the host's ports need).
    security_groups: list[NetSecGroup] = Field(default_factory=list)
    removed_security_groups: list[str] = Field(default_factory=list)
    group_members: dict[str, list[str]] = Field(default_factory=dict)
    # Member changes of remote groups (a boot, a delete): addresses that joined or left each group, to apply
    # to the lists held (sent without reading the whole list)
    members_added: dict[str, list[str]] = Field(default_factory=dict)
    members_removed: dict[str, list[str]] = Field(default_factory=dict)


class SecurityGroupsChanged(Message):
    """Security groups whose rules (or, with `members`, whose member ports) changed through the API: a
    conductor sends the new state to the hosts that need it, and only to them (cast)."""

    kind: ClassVar[str] = "security_groups_changed"
    group_ids: list[str] = Field(default_factory=list)
    members: bool = False


class RequestNetworkSync(Message):
    """An agent asks a conductor for its complete desired network state (call; reply: NetworkSync)."""

    kind: ClassVar[str] = "request_network_sync"
    host: str


class PortChange(Message):
    """A port that was created, changed or deleted, and the host it was bound to before ("" if none)."""

    kind: ClassVar[str] = "port_change"
    port_id: str
    network_id: str
    old_host: str = ""


class PortsChanged(Message):
    """Ports changed through the API: a conductor delivers the affected hosts' new state (cast)."""

    kind: ClassVar[str] = "ports_changed"
    changes: list[PortChange] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)  # networks whose every port must be re-sent (QoS)
    qos_changed: bool = False  # a QoS policy changed: receivers drop what they cached of QoS


# -- guests on real hypervisors: console, reconcile, power-state sync (issue 5) ---------------------


class GetConsoleOutput(Message):
    """The last `length` lines of a guest's serial console, all when None (call; reply: ConsoleText)."""

    kind: ClassVar[str] = "get_console_output"
    instance_uuid: str
    length: int | None = None


class ConsoleText(Message):
    kind: ClassVar[str] = "console_text"
    output: str


class ListHostInstances(Message):
    """What the database says a host holds (call to a conductor; reply: HostInstances). An agent asks on
    start to reconcile its guests: it has no database credentials of its own."""

    kind: ClassVar[str] = "list_host_instances"
    host: str


class HostInstance(Message):
    kind: ClassVar[str] = "host_instance"
    uuid: str
    vm_state: str
    power_state: int
    task_state: str | None = None
    ports: list[PortSpec] = Field(default_factory=list)


class HostInstances(Message):
    """A host's instances, and the guests evacuated off it that it must remove if it still holds them."""

    kind: ClassVar[str] = "host_instances"
    instances: list[HostInstance] = Field(default_factory=list)
    evacuated: list[str] = Field(default_factory=list)


class GuestPower(Message):
    """A guest's power state as its hypervisor sees it; `reason` says why it stopped (shutdown: the guest
    shut itself down; crashed: it died), and `message` is the hypervisor's words for a fault."""

    kind: ClassVar[str] = "guest_power"
    instance_uuid: str
    power_state: int
    reason: str = ""
    message: str = ""


class PowerStateSync(Message):
    """An agent reports guests whose power state changed, or all of them (`full`) after a start (cast to a
    conductor). Guests the database does not know are listed in `unknown`."""

    kind: ClassVar[str] = "power_state_sync"
    host: str
    guests: list[GuestPower] = Field(default_factory=list)
    full: bool = False
    unknown: list[str] = Field(default_factory=list)
    evacuated_removed: list[str] = Field(default_factory=list)  # their evacuations become `completed`


# The mobility messages live in their own module; importing it here registers them wherever calls is used.
from canopy.rpc import calls_mobility as _mobility  # noqa: E402, F401
