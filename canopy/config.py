"""Configuration: a TOML file, overridden by CANOPY_* environment variables."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from canopy.private_files import private_dir, write_private


class DatabaseConfig(BaseModel):
    """Where the global tables and the cell's tables live (one URL each; the same URL is fine)."""

    global_url: str = ""
    cell_url: str = ""
    cell_name: str = "cell1"
    pool_size: int = 10
    # "inline" runs each transaction on the event loop (fastest for SQLite); "thread" hands it to a pool.
    execution: Literal["auto", "inline", "thread"] = "auto"
    echo: bool = False
    # Read replicas of the global database, and of the cell's (the same list when both URLs are one).
    replica_urls: list[str] = Field(default_factory=list)
    cell_replica_urls: list[str] = Field(default_factory=list)
    replica_max_lag_s: float = 5.0  # a replica further behind leaves the rotation (back under half of it)
    fresh_wait_s: float = 0.5  # how long reader_fresh waits for a replica to catch up before reading the primary
    replica_check_s: float = 2.0
    # How long the api waits for one cell's database while listing across cells; past it (or on a
    # connection error) that cell's servers are listed with status UNKNOWN (issue 19).
    cell_timeout_s: float = 5.0

    def replica_map(self) -> dict[str, list[str]]:
        """Each primary URL's replica URLs."""
        found = {self.global_url: list(self.replica_urls)} if self.replica_urls else {}
        cell = self.cell_replica_urls or (self.replica_urls if self.cell_url in ("", self.global_url) else [])
        if cell and self.cell_url:
            found[self.cell_url] = list(cell)
        return found


# How far past `[bus] zmq_bind`'s port each control service binds, so that one file serves a control machine.
ZMQ_PORT_OFFSETS = {"conductor": 0, "all-in-one": 0, "scheduler": 1}


class BusConfig(BaseModel):
    """The message bus: in-process for one machine, ZeroMQ between machines."""

    transport: Literal["local", "zmq", "nats", "amqp"] = "local"
    # ZeroMQ: the address control services bind, and the control endpoints every process connects to. One
    # `zmq_bind` serves every control service of a machine: each binds its own port, `ZMQ_PORT_OFFSETS` past
    # the one given (conductor 7100, scheduler 7101); `zmq_binds` sets one service's address outright.
    zmq_bind: str = ""
    zmq_binds: dict[str, str] = Field(default_factory=dict)
    zmq_connect: list[str] = Field(default_factory=list)
    # Brokers: NATS servers (one cluster), or a RabbitMQ URL (amqp://user:pass@host:5672/vhost).
    nats_urls: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    call_timeout_s: float = 30.0
    # ZeroMQ CURVE (off unless a key is given; canopy/rpc/curve.py, docs/operations.md). Control services:
    # the server key pair and the client keys they admit, each with the host names it may speak for ("*":
    # any, for control services' own keys). Every connecting process: its key pair and the server's public
    # key (or the server key file itself, on a control machine). `canopy bus keygen` writes key files.
    curve_server_secret_file: str = ""
    curve_server_public_key: str = ""  # Z85, 40 characters
    curve_client_secret_file: str = ""
    curve_allowed_clients: dict[str, list[str]] = Field(default_factory=dict)

    def zmq_bind_for(self, service: str) -> str:
        """The address `service` binds: its own entry in `zmq_binds`, else `zmq_bind`'s port plus the
        service's offset (a `tcp://` address without a port, or an `ipc://` path, is used as given)."""
        if service in self.zmq_binds:
            return self.zmq_binds[service]
        head, _, port = self.zmq_bind.rpartition(":")
        if not self.zmq_bind.startswith("tcp://") or not port.isdigit():
            return self.zmq_bind
        return f"{head}:{int(port) + ZMQ_PORT_OFFSETS.get(service, 0)}"


class RateLimit(BaseModel):
    """One token bucket: `rate` requests a second on average, `burst` at once."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


def _limits(read: tuple[float, int], write: tuple[float, int], auth: tuple[float, int],
            expensive: tuple[float, int]) -> dict[str, RateLimit]:
    pairs = {"read": read, "write": write, "auth": auth, "expensive": expensive}
    return {k: RateLimit(rate=r, burst=b) for k, (r, b) in pairs.items()}


class RateLimitsConfig(BaseModel):
    """`[api.rate_limits]`: token buckets per project and per source address, by route class (read, write,
    auth, expensive = server create); see canopy/api/ratelimit.py and docs/operations.md. Per api process:
    with N processes a client gets up to N times these rates."""

    enabled: bool = True
    project: dict[str, RateLimit] = Field(default_factory=lambda: _limits((100, 500), (20, 200), (5, 50), (5, 100)))
    source: dict[str, RateLimit] = Field(default_factory=lambda: _limits((500, 2000), (100, 500), (10, 100),
                                                                         (20, 200)))
    max_keys: int = Field(default=50_000, ge=1)  # per table: bounded memory under an address-spraying flood


class AuditConfig(BaseModel):
    """`[api.audit]`: the audit trail of mutating calls (canopy/api/audit.py)."""

    enabled: bool = True
    queue_size: int = Field(default=10_000, ge=1)  # records waiting; past it new records are dropped (counted)
    batch: int = Field(default=500, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)


class ApiConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8774
    public_url: str = ""
    max_page_size: int = 1000
    region: str = "RegionOne"
    # Request bodies: a JSON body larger than this is refused with 413 before it is read (image data,
    # streamed to the store, is bounded by max_image_bytes instead); nesting deeper than max_json_depth is a 400.
    max_body_bytes: int = 1024 * 1024
    max_image_bytes: int = 1024**4
    max_json_depth: int = 32
    # The most servers one create may ask for (min_count/max_count), whatever the project's quota.
    max_servers_per_create: int = 1000
    # Addresses (exact, e.g. a Prometheus server's) that may read /metrics without an admin token.
    metrics_scrape_addresses: list[str] = Field(default_factory=list)
    # HTTPS: a PEM certificate (chain) and its key; both empty serves plain HTTP.
    tls_cert: str = ""
    tls_key: str = ""
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)


class AuthConfig(BaseModel):
    token_secret: str = ""
    token_ttl_s: int = 3600 * 12
    # How stale an api process's view of token revocations may be (seconds; at most 5).
    revocation_cache_s: float = Field(default=2.0, gt=0, le=5)
    # An operator's policy overrides (TOML or YAML: `rule name = "rule text"`), over canopy/auth/policy.py.
    policy_file: str = ""
    # Failed logins allowed per user name and per source address within the window, then 429.
    login_failures_per_user: int = 5
    login_failures_per_source: int = 30
    login_failure_window_s: float = 300.0


class QuotaDefaults(BaseModel):
    instances: int = 100
    cores: int = 400
    ram: int = 1024 * 1024


class ConductorConfig(BaseModel):
    # The conductor's name, which its task leases carry: a restarted conductor takes back at once the
    # tasks leased under it. Empty: a name generated once and kept in data_dir/conductor-name.
    name: str = ""
    lease_s: float = 60.0
    # A task taken over this many times without finishing (it kills its conductor?) fails instead.
    max_task_attempts: int = 5
    # How long a build's call waits for a route the bus does not know yet (a restarted conductor learns
    # its agents as they next heartbeat) before the step fails.
    no_route_wait_s: float = 30.0
    sweep_interval_s: float = 5.0
    # A task nobody leased for this long lost its wake-up cast; the sweeper starts it.
    lost_cast_s: float = 5.0
    heartbeat_flush_s: float = 2.0
    stop_timeout_s: float = 60.0
    agent_call_timeout_s: float = 600.0


class MobilityConfig(BaseModel):
    """Resize, migrations, snapshots, rebuild, rescue (issue 6; see docs/mobility.md)."""

    allow_resize_to_same_host: bool = True
    resize_confirm_window_s: float = 0.0  # confirm resizes left unconfirmed this long (0: never, as Nova)
    auto_confirm_interval_s: float = 60.0
    progress_poll_s: float = 1.0  # how often a live migration's progress is written


class ComputeConfig(BaseModel):
    """Compute API behaviour that Nova makes configurable."""

    # Nova's [api] enable_instance_password: return a generated adminPass on create, rebuild and rescue
    enable_instance_password: bool = True
    password_length: int = Field(default=12, ge=8, le=255)  # Nova's password_length
    # Nova's shelved_offload_time: 0 offloads at once; -1 never (a positive delay is run by the sweeper)
    shelved_offload_time: int = 0


class AgentConfig(BaseModel):
    host: str = ""
    driver: Literal["fake", "libvirt"] = "fake"
    heartbeat_s: float = 10.0
    availability_zone: str = "nova"
    datacenter: str = "dc1"
    rack: str = ""
    vcpus: int = 32
    memory_mb: int = 131072
    disk_gb: int = 2000
    # Power-state sync (a guest that shut itself down shows SHUTOFF) and the periodic reconcile.
    power_sync_s: float = 10.0
    reconcile_s: float = 300.0
    # On start: how long to wait for the hypervisor and Open vSwitch (with backoff) before giving up.
    ready_timeout_s: float = 3600.0
    # Guests the database does not know are reported; destroyed only when this is set.
    remove_unknown_guests: bool = False
    # Health (agent/health.py, sent with each heartbeat): a libvirt agent's instances and image cache
    # paths each need this much free space, or the host is reported unhealthy.
    min_free_disk_gb: float = 5.0


class LibvirtConfig(BaseModel):
    """The libvirt/QEMU driver (agent.driver = "libvirt"); see docs/libvirt.md."""

    uri: str = "qemu:///system"
    instances_path: Path = Path("/var/lib/canopy/instances")
    image_cache_path: Path | None = None  # default: <instances_path>/_base
    image_cache_max_age_s: float = 86400.0
    image_cache_min_free_gb: float = 10.0
    # The Image API the agent fetches images from, with a service credential (it has no database access).
    image_api_url: str = ""  # default: api.public_url
    service_user: str = "admin"
    service_password: str = "admin"
    service_project: str = "admin"
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    accel_probe_kernel: Path | None = None
    accel_probe_initrd: Path | None = None
    accel_probe_cmdline: str = "console=ttyS0 panic=-1"
    accel_probe_marker: str = "CANOPY-ACCEL-PROBE-OK"
    accel_probe_timeout_s: float = 15.0
    vif_type: Literal["ethernet", "ovs"] = "ethernet"
    # Where this host's QEMU listens for an incoming live migration's memory stream and disk copy
    # (empty: libvirt's default, the host's name as the source resolves it).
    migration_address: str = ""
    # The libvirt URI other hosts' libvirtd reach this one by for a peer-to-peer migration, e.g.
    # qemu+tls://hv-0001.dc1/system (empty: `uri`, right only when it names no local socket).
    migration_uri: str = ""
    live_migration_bandwidth_mib: int = 0  # a cap per live migration, MiB/s (0: none)
    bridge: str = "br-int"
    config_drive: bool = True
    # Root disks (issue 6, agent/disk/backend.py): qcow2 overlays, or a logical volume per disk.
    disk_backend: Literal["qcow2", "lvm"] = "qcow2"
    lvm_volume_group: str = ""  # required with "lvm": an agent without one refuses to start
    lvm_thin_pool: str = ""  # empty: thick volumes
    # Write key, hostname and network settings into the guest's ext4 root instead of a config drive
    # (agent/inject.py); an image's `canopy_injection` property overrides this.
    injection: bool = False
    shutdown_retry_s: float = 10.0
    console_max_bytes: int = 1 << 20
    # Host defaults for the hw: settings (cpu_mode, cpu_model, cpu_features, machine_type, disk_bus,
    # vif_model, video_model, serial_console), and XPath patch rules {op, xpath, value, attribute, xml}.
    customization: dict[str, str] = Field(default_factory=dict)
    patches: list[dict[str, Any]] = Field(default_factory=list)


class FakeDriverConfig(BaseModel):
    """The simulated hypervisor: how long each operation takes, and what it does when told to fail."""

    hosts: int = 50
    spawn_delay_s: float = 0.2
    op_delay_s: float = 0.05
    vcpus: int = 32
    memory_mb: int = 131072
    disk_gb: int = 2000


class SchedulerConfig(BaseModel):
    refresh_s: float = 1.0
    weigher: Literal["spread", "pack"] = "spread"
    top_k: int = 3
    service_down_s: float = 60.0
    # Weights per resource for the weigher (their sign follows `weigher`; aggregates may override them).
    ram_weight: float = 1.0
    cpu_weight: float = 1.0
    disk_weight: float = 0.5
    soft_affinity_weight: float = 1.0
    # The change feed re-reads this much before its watermark (longest write + clock skew between writers).
    feed_overlap_s: float = 2.0
    liveness_refresh_s: float = 5.0
    full_resync_s: float = 600.0
    audit_interval_s: float = 300.0
    audit_batch: int = 500
    reachability_ttl_s: float = 5.0
    # Multi-create: how long the first member of a reservation waits for the others, to place them together.
    batch_wait_s: float = 0.05
    max_claim_tries: int = 32
    # A project named by an aggregate's filter_tenant_id may use only the hosts of its aggregates.
    pin_tenants: bool = True


def _default_task_deadlines() -> dict[str, float]:
    # Above the natural timeouts of each step (agent calls: 600 s), so a step that fails on its own
    # says why; the sweeper catches only what would otherwise stay stuck.
    return {"scheduling": 900, "networking": 900, "block_device_mapping": 900, "spawning": 1800,
            "powering-off": 1500, "powering-off-soft": 1500, "powering-off-hard": 900, "powering-on": 900,
            "rebooting": 1500, "rebooting_hard": 900, "reboot_started_hard": 900, "deleting": 1800}


class ObservabilityConfig(BaseModel):
    """Logs, liveness, the stuck-task sweeper, notifications and health checks."""

    log_format: Literal["json", "text"] = "json"
    log_file: str = ""  # empty: stdout
    # Seconds without a heartbeat before a service shows down. None: three heartbeat intervals as the
    # database sees them (agent.heartbeat_s + conductor.heartbeat_flush_s each, since conductors write
    # heartbeats in batches). The resolved value goes to scheduler.service_down_s, which everything reads.
    service_down_s: float | None = None
    task_deadlines_s: dict[str, float] = Field(default_factory=_default_task_deadlines)
    default_task_deadline_s: float = 3600.0  # task states not named above
    stuck_sweep_interval_s: float = 30.0
    notifications: bool = True
    notification_topic: str = "notifications"
    health_timeout_s: float = 2.0
    metrics_port: int = 0  # >0: serve this process's metrics on its own port (services without the api)
    metrics_host: str = "127.0.0.1"


class NetworkConfig(BaseModel):
    """Networking: how agents program Open vSwitch, address quotas and the hold time of public addresses."""

    # "compile": agents compile their flows and keep them in a fake switch (the all-in-one's default);
    # "ovs": they apply them to Open vSwitch; "private-ovs" (all-in-one): to a private Open vSwitch the
    # all-in-one starts under data_dir/ovs, one integration bridge per simulated host.
    apply: Literal["compile", "ovs", "private-ovs"] = "compile"
    integration_bridge: str = "br-int"
    datapath_type: Literal["system", "netdev", "dummy"] = "system"
    tap_type: Literal["system", "dummy"] = "system"
    ovs_rundir: str = ""  # a private Open vSwitch's folder (empty: the system's)
    physical_bridges: dict[str, str] = Field(default_factory=dict)  # physical network -> bridge (br-<name>)
    physical_interfaces: dict[str, str] = Field(default_factory=dict)  # physical network -> NIC on its bridge
    uplink_ofports: dict[str, int] = Field(default_factory=dict)  # physical network -> uplink port (2..99)
    tunnel_ip: str = ""  # this host's VXLAN endpoint (empty: the host's address)
    reconcile_s: float = 60.0
    full_sync_s: float = 600.0
    sync_batch_s: float = 0.01  # conductors gather port changes this long into one batch per host
    # A freed public address (external network) goes to another project only after this long: a hosting
    # customer's old address must not be handed to a stranger at once (reputation, stale ARP caches).
    public_ip_hold_s: float = 3600.0
    quota_port: int = -1  # per-project defaults (-1: unlimited)
    quota_public_ip: int = -1
    quota_security_group: int = 10  # Neutron's defaults
    quota_security_group_rule: int = 100

    def quota_defaults(self) -> dict[str, int]:
        return {"port": self.quota_port, "public_ip": self.quota_public_ip,
                "security_group": self.quota_security_group, "security_group_rule": self.quota_security_group_rule}


class Settings(BaseSettings):
    """All of Canopy's configuration."""

    model_config = SettingsConfigDict(env_prefix="CANOPY_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path("var")
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    quota: QuotaDefaults = Field(default_factory=QuotaDefaults)
    conductor: ConductorConfig = Field(default_factory=ConductorConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    fake: FakeDriverConfig = Field(default_factory=FakeDriverConfig)
    libvirt: LibvirtConfig = Field(default_factory=LibvirtConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    mobility: MobilityConfig = Field(default_factory=MobilityConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("CANOPY_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def resolved(self) -> Settings:
        """Fill in what follows from other settings (database URLs under data_dir, a token secret)."""
        data = self.model_copy(deep=True)
        private_dir(data.data_dir)
        if not data.database.global_url:
            data.database.global_url = f"sqlite:///{(data.data_dir / 'canopy.db').resolve()}"
        if not data.database.cell_url:
            data.database.cell_url = data.database.global_url
        if not data.auth.token_secret:
            data.auth.token_secret = _persistent_secret(data.data_dir / "token-secret")
        if not data.api.public_url:
            scheme = "https" if data.api.tls_cert else "http"
            data.api.public_url = f"{scheme}://{data.api.host}:{data.api.port}"
        obs = data.observability
        if obs.service_down_s is None:  # an explicit scheduler.service_down_s still wins
            explicit = "service_down_s" in data.scheduler.model_fields_set
            interval = data.agent.heartbeat_s + data.conductor.heartbeat_flush_s
            obs.service_down_s = data.scheduler.service_down_s if explicit else 3 * interval
        data.scheduler.service_down_s = obs.service_down_s
        return data


def _persistent_secret(path: Path) -> str:
    """A random secret kept in the data folder, so tokens survive a restart."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    write_private(path, value)
    return value


def load_settings(**overrides: Any) -> Settings:
    """Settings from the TOML file named by CANOPY_CONFIG, the environment, then explicit overrides."""
    return Settings(**overrides).resolved()
