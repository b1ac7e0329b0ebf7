"""`POST /servers`: validate everything, then write the instances, their actions and durable tasks
(with the quota reservation) in one go, and wake a conductor. Bad input writes nothing."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection, bindparam, insert, or_, select
from starlette.requests import Request

from canopy import states
from canopy.api.compute import field_limits
from canopy.api.compute.common import cell_db, cloud_of
from canopy.api.compute.create_checks import bound_count, check_fixed_ip, check_security_groups, zone_exists
from canopy.api.compute.quota_store import QuotaExceeded, reserve
from canopy.api.compute.server_groups import HintsRequest, add_group_members, parse_hints, resolve_hints
from canopy.api.compute.server_ports import claim_port, requested_ports
from canopy.api.compute.server_secgroups import resolve_create_groups
from canopy.api.errors import ApiError, bad_request
from canopy.api.http import ctx, is_uuid, validate
from canopy.context import RequestContext
from canopy.db import tables_cell as c
from canopy.db import tables_global as g
from canopy.image import store as image_store
from canopy.rpc.base import Target
from canopy.rpc.calls import WakeTask
from canopy.rpc.tasks import (
    BuildPayload,
    FlavorSnapshot,
    NetworkChoice,
    SchedulerHints,
    TaskRecord,
    dump_payload,
)
from canopy.runtime import Cloud

_INSERT_INSTANCE = insert(c.instances)
_INSERT_ACTION = insert(c.instance_actions)
_INSERT_TASK = insert(c.tasks)
_INSERT_MAPPING = insert(g.instance_mappings)
_FLAVOR_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}
FLAVOR_CACHE_S = 10.0


class NetworkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uuid: str | None = None
    port: str | None = None
    fixed_ip: str | None = None
    tag: str | None = None


class ServerCreate(BaseModel):
    """The `server` object of a create request (Nova's schema, 2.1–2.87)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=255)
    imageRef: str | None = None
    flavorRef: str | int
    networks: list[NetworkRequest] | Literal["auto", "none"] | None = None
    key_name: str | None = Field(default=None, max_length=255)
    user_data: str | None = Field(default=None, max_length=65535)
    metadata: dict[str, str] | None = None
    availability_zone: str | None = Field(default=None, max_length=255)
    min_count: int = Field(default=1, ge=1)
    max_count: int | None = Field(default=None, ge=1)
    return_reservation_id: bool = False
    config_drive: bool | str | None = None
    adminPass: str | None = None
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    security_groups: list[dict[str, str]] | None = None
    block_device_mapping_v2: list[dict[str, Any]] | None = None
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(default=None, alias="OS-DCF:diskConfig")
    description: str | None = Field(default=None, max_length=255)
    tags: list[str] | None = None
    personality: list[dict[str, str]] | None = None
    host: str | None = None
    hypervisor_hostname: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _printable_name(cls, v: Any) -> str:
        return field_limits.check_name(v)

    @field_validator("description", mode="before")
    @classmethod
    def _printable_description(cls, v: Any) -> str | None:
        return field_limits.check_description(v)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_limits(cls, v: Any) -> dict[str, str] | None:
        return None if v is None else field_limits.check_metadata(v)

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_limits(cls, v: Any) -> list[str] | None:
        return None if v is None else field_limits.check_tags(v)

    @field_validator("personality", mode="before")
    @classmethod
    def _personality_limits(cls, v: Any) -> list[dict[str, str]] | None:
        return None if v is None else field_limits.check_personality(v)

    @field_validator("accessIPv4", mode="before")
    @classmethod
    def _access_v4(cls, v: Any) -> str | None:
        return field_limits.check_access_ip(v, 4)

    @field_validator("accessIPv6", mode="before")
    @classmethod
    def _access_v6(cls, v: Any) -> str | None:
        return field_limits.check_access_ip(v, 6)


# Keys that exist only from (or until) a microversion.
_VERSIONED_KEYS = {"description": ((2, 19), None), "tags": ((2, 52), None), "personality": (None, (2, 56)),
                   "host": ((2, 74), None), "hypervisor_hostname": ((2, 74), None)}


def parse_server(body: dict[str, Any], mv: tuple[int, int]) -> ServerCreate:
    """Validate a create body at a microversion; 400 names the first wrong field."""
    for key, (low, high) in _VERSIONED_KEYS.items():
        if key in body and ((low and mv < low) or (high and mv > high)):
            raise bad_request(f"Invalid input for field/attribute server. Additional properties are not "
                              f"allowed ('{key}' was unexpected)")
    server = validate(ServerCreate, body, "server")
    if server.networks is None and mv >= (2, 37):
        raise bad_request("Invalid input for field/attribute server. 'networks' is a required property")
    if isinstance(server.networks, str) and mv < (2, 37):
        raise bad_request(f"Invalid input for field/attribute networks. Value: {server.networks}. "
                          f"'{server.networks}' is not of type 'array'")
    if server.max_count is not None and server.max_count < server.min_count:
        raise bad_request("min_count must be <= max_count")
    if server.user_data is not None:
        try:
            base64.b64decode(server.user_data, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("Invalid input for field/attribute user_data. Value: <data>. "
                              "'user_data' is not base64 encoded") from None
    _check_block_devices(server)
    _check_access_ips_and_tags(server)
    for net in server.networks if isinstance(server.networks, list) else []:
        _check_network_request(net)
        if net.port is not None and (server.max_count or server.min_count) > 1:
            raise bad_request("Unable to launch multiple instances with a single configured port ID. Please "
                              "launch your instance one by one with different ports.")
    check_security_groups(server.security_groups)
    return server


def _check_access_ips_and_tags(server: ServerCreate) -> None:
    """accessIPv4/v6 must be addresses of their version; tags within Nova's limits."""
    from canopy.api.compute.server_tags import check_tags

    if server.accessIPv4 is not None:
        server.accessIPv4 = field_limits.check_access_ip(server.accessIPv4, 4)
    if server.accessIPv6 is not None:
        server.accessIPv6 = field_limits.check_access_ip(server.accessIPv6, 6)
    if server.tags is not None:
        server.tags = check_tags(server.tags)


def _check_block_devices(server: ServerCreate) -> None:
    """Only the image's local root disk (what the CLI sends for `--image`) is supported; volumes are not."""
    for bdm in server.block_device_mapping_v2 or []:
        source, dest = bdm.get("source_type"), bdm.get("destination_type", "local")
        if source != "image" or dest != "local" or str(bdm.get("boot_index", 0)) not in ("0", "None"):
            raise bad_request(f"Block device mapping {source!r} → {dest!r} is not supported by this cloud: "
                              "there are no volumes; boot from an image onto the local disk.")
        image = bdm.get("uuid") or bdm.get("image_id")
        if server.imageRef and image and image != server.imageRef:
            raise bad_request("The image in block_device_mapping_v2 differs from imageRef.")
        if not server.imageRef and image:
            server.imageRef = str(image)


def _check_network_request(net: NetworkRequest) -> None:
    if net.port is not None:
        if not is_uuid(net.port):
            raise bad_request(f"Bad networks format: port uuid is not in proper format ({net.port})")
        if net.fixed_ip is not None:
            raise bad_request("Invalid input for field/attribute networks. A fixed_ip cannot be given with a port.")
        return
    if not net.uuid:
        raise bad_request("Invalid input for field/attribute networks. A network 'uuid' is required.")
    if not is_uuid(net.uuid):
        raise bad_request(f"Bad networks format: network uuid is not in proper format ({net.uuid})")
    if net.fixed_ip is not None:
        try:
            ipaddress.ip_address(net.fixed_ip)
        except ValueError:
            raise bad_request(f"Invalid input for field/attribute fixed_ip. Value: {net.fixed_ip}. "
                              f"'{net.fixed_ip}' is not a valid IP address") from None


def hostname_of(name: str, fallback: str) -> str:
    """A DNS-safe hostname from a display name, as Nova sanitizes it."""
    host = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-.")[:63].strip("-")
    return host or f"server-{fallback}"


def _load_flavor(conn: Connection, flavor_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(g.flavors).where(g.flavors.c.id == flavor_id)).mappings().first()
    return dict(row) if row else None


async def find_flavor(cloud: Cloud, flavor_id: str, rc: RequestContext,
                      missing: str = "Flavor {id} could not be found.") -> dict[str, Any]:
    """A flavor the caller may use, by id, cached briefly (flavors don't change once made; a deleted one
    ages out). A private flavor is the admins' only (there are no per-project grants): to anyone else it
    does not exist, as flavor show answers (400 `missing`)."""
    hit = _FLAVOR_CACHE.get(flavor_id)
    if hit and time.monotonic() - hit[0] < FLAVOR_CACHE_S:
        flavor: dict[str, Any] | None = hit[1]
    else:
        flavor = await cloud.dbs.global_db.read(_load_flavor, flavor_id)
        if flavor is not None:
            _FLAVOR_CACHE[flavor_id] = (time.monotonic(), flavor)
    if flavor is None or not (flavor["is_public"] or rc.is_admin):
        raise bad_request(missing.format(id=flavor_id))
    return flavor


def _image_ref(ref: str) -> str:
    image_id = ref.rstrip("/").rsplit("/", 1)[-1]
    if not is_uuid(image_id):
        raise bad_request(f"Invalid imageRef provided: {ref}")
    return image_id


_n, _s = g.networks.c, g.subnets.c
_NETS_WITH_SUBNETS = select(g.networks, g.subnets).select_from(
    g.networks.outerjoin(g.subnets, _s.network_id == _n.id))
_NETS_BY_ID = _NETS_WITH_SUBNETS.where(_n.id.in_(bindparam("w_ids", expanding=True)))
_NETS_AUTO = _NETS_WITH_SUBNETS.where(or_(_n.shared.is_(True), _n.project_id == bindparam("w_project")))
_KEY = select(g.keypairs.c.public_key).where(g.keypairs.c.user_id == bindparam("w_user"),
                                            g.keypairs.c.name == bindparam("w_name"))


def _lookups(conn: Connection, rc: RequestContext, image_id: str, network_ids: list[str] | None,
             key_name: str | None) -> dict[str, Any]:
    """Image, networks (with their subnets, one query) and key pair the request names."""
    image = image_store.get_visible_image(conn, image_id, rc.project_id, rc.is_admin)
    found: dict[str, Any] = {"image": image, "networks": {}, "key": None}
    if network_ids is not None:
        rows = conn.execute(_NETS_BY_ID, {"w_ids": network_ids}).all() if network_ids else []
    else:  # "auto": the shared networks, and the project's own
        rows = conn.execute(_NETS_AUTO, {"w_project": rc.project_id}).all()
    for row in rows:
        m = row._mapping
        net = found["networks"].setdefault(m[_n.id], {"network": _net_fields(m, _n), "subnets": []})
        if m[_s.id] is not None:
            net["subnets"].append(_subnet_fields(m, _s))
    if key_name:
        key = conn.execute(_KEY, {"w_user": rc.user_id, "w_name": key_name}).first()
        found["key"] = key[0] if key else None
    return found


def _net_fields(m: Any, n: Any) -> dict[str, Any]:
    return {"id": m[n.id], "name": m[n.name], "project_id": m[n.project_id], "shared": m[n.shared],
            "network_type": m[n.network_type], "physical_network": m[n.physical_network],
            "segmentation_id": m[n.segmentation_id], "mtu": m[n.mtu], "external": m[n.external]}


def _subnet_fields(m: Any, s: Any) -> dict[str, Any]:
    return {"id": m[s.id], "network_id": m[s.network_id], "ip_version": m[s.ip_version], "cidr": m[s.cidr],
            "gateway_ip": m[s.gateway_ip], "allocation_pools": m[s.allocation_pools],
            "dns_nameservers": m[s.dns_nameservers], "host_routes": m[s.host_routes],
            "segment_id": m[s.segment_id], "name": m[s.name]}


def check_image(image: dict[str, Any] | None, image_id: str, flavor: dict[str, Any], rc: RequestContext) -> None:
    if image is None:  # or not visible to the caller: loaded by get_visible_image
        raise bad_request(f"Image {image_id} could not be found.")
    if image["status"] != "active":
        raise bad_request(f"Image {image_id} is not active.")
    if flavor["disk_gb"] and image["size"] and image["size"] > flavor["disk_gb"] * 1024**3:
        raise bad_request(f"Flavor's disk is too small for requested image. Flavor disk is "
                          f"{flavor['disk_gb'] * 1024**3} bytes, image is {image['size']} bytes.")
    if flavor["disk_gb"] and image["min_disk"] > flavor["disk_gb"]:
        raise bad_request("Flavor's disk is too small for requested image.")
    if image["min_ram"] > flavor["ram_mb"]:
        raise bad_request("Flavor's memory is too small for requested image.")


def pick_networks(server: ServerCreate, found: dict[str, Any], rc: RequestContext) -> list[dict[str, Any]]:
    """The networks to attach, each with the fixed IP asked for (if any)."""
    nets = found["networks"]
    if server.networks == "none":
        return []
    if isinstance(server.networks, list):
        chosen = []
        for req in server.networks:
            net = nets.get(req.uuid)
            if net is None or not (rc.is_admin or net["network"]["shared"]
                                   or net["network"]["project_id"] == rc.project_id):
                raise bad_request(f"Network {req.uuid} could not be found.")
            if req.fixed_ip is not None:
                check_fixed_ip(net, req.fixed_ip, rc)
            chosen.append({**net, "fixed_ip": req.fixed_ip, "port_id": req.port})
        return chosen
    if len(nets) == 0:
        return []
    if len(nets) > 1:
        own = [n for n in nets.values() if n["network"]["project_id"] == rc.project_id]
        if len(own) != 1:
            raise ApiError(409, "Multiple possible networks found, use a Network ID to be more specific.")
        return [{**own[0], "fixed_ip": None}]
    return [{**next(iter(nets.values())), "fixed_ip": None}]


def flavor_snapshot(flavor: dict[str, Any]) -> FlavorSnapshot:
    """The snapshot a task and an instance keep of a flavor row."""
    return FlavorSnapshot.of_row(flavor)


def placement_hints(server: ServerCreate, rc: RequestContext) -> tuple[str | None, str | None]:
    """The availability zone, and a host forced by an admin (`zone:host` or the 2.74 `host` field)."""
    zone, force = server.availability_zone, server.host or server.hypervisor_hostname
    if zone and ":" in zone:
        zone, _, force_part = zone.partition(":")
        force = force_part.split(":")[0] or force
        zone = zone or None
    if force and not rc.is_admin:
        raise ApiError(403, "Policy doesn't allow os_compute_api:servers:create:forced_host to be performed.")
    return zone, force


@dataclass(frozen=True)
class CreateRequest:
    """A server create's body, parsed once: the server and the scheduler hints."""

    server: ServerCreate
    hints: HintsRequest


def parse_create(body: dict[str, Any], mv: tuple[int, int]) -> CreateRequest:
    """Validate a whole create body (the server and its hints) before anything is looked up."""
    if "server" not in body:
        raise bad_request("Invalid input for field/attribute server. 'server' is a required property")
    extra = set(body) - {"server", "os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"}
    if extra:
        raise bad_request(f"Additional properties are not allowed ({', '.join(sorted(extra))} was unexpected)")
    raw = body["server"]
    if not isinstance(raw, dict):
        raise bad_request("Invalid input for field/attribute server. Value must be an object.")
    return CreateRequest(server=parse_server(raw, mv), hints=parse_hints(body))


@dataclass
class PlannedServer:
    """One server of a create: its identity, its build payload and (once written) its task."""

    uuid: str
    name: str
    launch_index: int
    payload: BuildPayload
    task: TaskRecord | None = None


@dataclass
class Plan:
    """What a create writes: the servers (a multi-create's batch) and what they share."""

    servers: list[PlannedServer]
    flavor: FlavorSnapshot
    image_id: str
    min_count: int
    reservation_id: str
    zone: str | None
    key_data: str | None
    hints: SchedulerHints
    requested: int = 1
    template: BuildPayload | None = None

    @property
    def count(self) -> int:
        return len(self.servers)

    def fill(self, count: int) -> None:
        """Plan `count` servers (their UUIDs, names and build payloads) from the shared template."""
        assert self.template is not None
        base, self.servers = self.template, []
        for i in range(count):
            uuid = str(uuidlib.uuid4())
            name = base.name if count == 1 else f"{base.name}-{i + 1}"
            payload = base.model_copy(update={"name": name, "hostname": hostname_of(name, uuid), "count": count})
            self.servers.append(PlannedServer(uuid=uuid, name=name, launch_index=i, payload=payload))


async def create_servers(request: Request, req: CreateRequest) -> tuple[list[str], str]:
    """Validate against the database, write everything, wake conductors; the new UUIDs and reservation id."""
    cloud, rc, server = cloud_of(request), ctx(request), req.server
    bound_count(server, cloud.settings.api.max_servers_per_create)
    flavor = await find_flavor(cloud, str(server.flavorRef), rc)
    if not server.imageRef:
        raise bad_request("Missing imageRef attribute")
    image_id = _image_ref(server.imageRef)
    requests = server.networks if isinstance(server.networks, list) else []
    ports = await requested_ports(cloud, rc, [n.port for n in requests if n.port])
    for net in requests:
        if net.port:
            net.uuid = ports[net.port]["network_id"]  # a port's network is where it lives
    network_ids = [n.uuid for n in requests if n.uuid] if isinstance(server.networks, list) else None
    found = await cloud.dbs.global_db.read(_lookups, rc, image_id, network_ids, server.key_name)
    check_image(found["image"], image_id, flavor, rc)
    if server.key_name and found["key"] is None:
        raise bad_request("Invalid key_name provided.")
    networks = pick_networks(server, found, rc)
    zone, force_host = placement_hints(server, rc)
    if zone and not await cell_db(request).read(zone_exists, zone):
        raise bad_request("The requested availability zone is not available")
    hints = await resolve_hints(request, req.hints)
    groups = await resolve_create_groups(request, server.security_groups)
    plan = _plan(server, rc, flavor_snapshot(flavor), image_id, networks, found["key"], zone, force_host, hints,
                 dict(found["image"].get("properties") or {}))
    assert plan.template is not None
    plan.template.security_groups = groups  # the servers are planned from it once the quota is reserved
    await _write(cloud, rc, plan, server)
    for item in plan.servers:
        assert item.task is not None
        await cloud.bus.cast(Target("conductor"), WakeTask(
            task_id=item.task.id, instance_uuid=item.uuid, task_kind="build", task=item.task))
    return [i.uuid for i in plan.servers], plan.reservation_id


def _plan(server: ServerCreate, rc: RequestContext, flavor: FlavorSnapshot, image_id: str,
          networks: list[dict[str, Any]], key_data: str | None, zone: str | None, force_host: str | None,
          hints: SchedulerHints, image_properties: dict[str, Any]) -> Plan:
    """What every server of the create shares; the servers themselves are planned once the quota has
    granted their number (`Plan.fill`), so a huge max_count costs nothing before it is refused."""
    choices = [NetworkChoice.model_validate(n) for n in networks]
    template = BuildPayload(
        flavor=flavor, image_id=image_id, networks=choices, availability_zone=zone, force_host=force_host,
        key_data=key_data, user_data=server.user_data, metadata=server.metadata or {}, name=server.name,
        hostname=hostname_of(server.name, "0"), project_id=rc.project_id or "", user_id=rc.user_id,
        scheduler_hints=hints, image_properties=image_properties, reservation_id=f"r-{uuidlib.uuid4().hex[:8]}",
        count=1, admin_pass=server.adminPass)
    return Plan(servers=[], flavor=flavor, image_id=image_id, min_count=server.min_count,
                reservation_id=template.reservation_id, zone=zone, key_data=key_data, hints=hints,
                requested=server.max_count or server.min_count, template=template)


async def _write(cloud: Cloud, rc: RequestContext, plan: Plan, server: ServerCreate) -> None:
    """Quota and mappings (global), instances/actions/tasks (cell): one transaction when one database."""
    gdb, cdb = cloud.dbs.global_db, cloud.dbs.cell(cloud.cell_name)
    now = cloud.clock.now()

    def write_global(conn: Connection) -> None:
        _reserve(conn, cloud, rc, plan)
        conn.execute(_INSERT_MAPPING, [
            {"instance_uuid": i.uuid, "cell_name": cloud.cell_name, "project_id": rc.project_id}
            for i in plan.servers])
        add_group_members(conn, plan.hints, [i.uuid for i in plan.servers])

    def write_cell(conn: Connection) -> None:
        for item in plan.servers:
            _insert_instance(conn, rc, plan, server, item, now)

    def write_both(conn: Connection) -> None:
        write_global(conn)
        write_cell(conn)

    if gdb is cdb:
        await gdb.write(write_both)
        return
    await gdb.write(write_global)
    try:
        await cdb.write(write_cell)
    except Exception:
        await gdb.write(_undo_global, plan, rc)
        raise


def _reserve(conn: Connection, cloud: Cloud, rc: RequestContext, plan: Plan, n: int | None = None) -> None:
    """Reserve the quota of the servers asked for (or, over quota, of min_count), then plan that many."""
    f, n = plan.flavor, plan.requested if n is None else n
    try:
        reserve(conn, rc.project_id or "", {"instances": n, "cores": f.vcpus * n, "ram": f.memory_mb * n},
                cloud.settings.quota)
    except QuotaExceeded as exc:
        if plan.min_count < n:
            _reserve(conn, cloud, rc, plan, plan.min_count)
            return
        raise ApiError(403, str(exc)) from None
    plan.fill(n)


def _undo_global(conn: Connection, plan: Plan, rc: RequestContext) -> None:
    from canopy.db.records import release_quota

    f, n = plan.flavor, plan.count
    release_quota(conn, rc.project_id or "", n, f.vcpus * n, f.memory_mb * n)
    conn.execute(g.instance_mappings.delete().where(
        g.instance_mappings.c.instance_uuid.in_([i.uuid for i in plan.servers])))


def _insert_instance(conn: Connection, rc: RequestContext, plan: Plan, server: ServerCreate,
                     item: PlannedServer, now: Any) -> None:
    p = item.payload
    conn.execute(_INSERT_INSTANCE, dict(
        uuid=item.uuid, project_id=rc.project_id, user_id=rc.user_id, name=item.name,
        hostname=p.hostname, description=server.description, flavor_id=plan.flavor.id,
        flavor=plan.flavor.instance_view(), image_ref=plan.image_id, host=None, availability_zone=plan.zone,
        vm_state=states.BUILDING, task_state=states.SCHEDULING, power_state=0, key_name=server.key_name,
        key_data=plan.key_data, user_data=server.user_data,
        config_drive="True" if server.config_drive in (True, "True", "true", "1") else "",
        metadata=server.metadata or {}, networks=[n.network["id"] for n in p.networks], addresses={},
        reservation_id=plan.reservation_id, launch_index=item.launch_index, locked=False, progress=0,
        access_ip_v4=server.accessIPv4, access_ip_v6=server.accessIPv6, tags=server.tags or None,
        created_at=now, updated_at=now, deleted=False))
    for choice in p.networks:
        if choice.port_id:
            claim_port(conn, choice.port_id, item.uuid, now)
    action_id = conn.execute(_INSERT_ACTION, dict(
        instance_uuid=item.uuid, request_id=rc.request_id, action="create", user_id=rc.user_id,
        project_id=rc.project_id, start_time=now, updated_at=now)).inserted_primary_key
    assert action_id is not None
    task = {"instance_uuid": item.uuid, "kind": "build", "action_id": action_id[0], "payload": dump_payload(p),
            "request_id": rc.request_id, "attempts": 0, "created_at": now}
    task_id = conn.execute(_INSERT_TASK, task).inserted_primary_key
    assert task_id is not None
    item.task = TaskRecord(id=task_id[0], instance_uuid=item.uuid, kind="build", action_id=action_id[0],
                           request_id=rc.request_id, payload=p)
