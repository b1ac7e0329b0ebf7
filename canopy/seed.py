"""First-run data for a new cloud: the `default` domain, the service catalog, roles (admin implies member,
member implies reader: canopy/api/identity/grants.py), an admin and a demo project, flavors, a flat public
network with a subnet from 203.0.113.0/24, and one image. Seeding twice changes nothing."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, insert, select

from canopy.api.identity.catalog import INTERFACES, PUBLIC_URL, SERVICES
from canopy.api.identity.passwords import hash_password
from canopy.clock import Clock
from canopy.db import tables_global as g
from canopy.db.engine import Databases

ROLES = ("admin", "member", "reader")
FLAVORS = (
    # id, name, vcpus, ram MiB, disk GiB
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
)
PUBLIC_NETWORK_ID = "5b9f2f7e-6f43-4bd7-9f8e-3d1b0a7c9a01"
PUBLIC_SUBNET_ID = "c2a4d1e0-2f6b-4f0e-8d3e-6b1b6f1a2b02"
TINY_IMAGE_ID = "8b6b7c4e-1a39-4b0d-9a55-0f6f5a0d1c03"


@dataclass(frozen=True)
class SeedCredentials:
    admin_password: str = "admin"
    demo_password: str = "demo"


def seed(dbs: Databases, image_dir: Path, creds: SeedCredentials | None = None, clock: Clock | None = None) -> None:
    """Create the first-run data where it is missing."""
    creds = creds or SeedCredentials()
    clock = clock or Clock()
    with dbs.global_db.writer() as conn:
        _seed_identity(conn, creds, clock)
        _seed_flavors(conn, clock)
        _seed_network(conn, clock)
        _seed_image(conn, image_dir, clock)


def _id_of(conn: Connection, table: Table, name: str) -> str | None:
    return conn.execute(select(table.c.id).where(table.c.name == name)).scalar()


def _seed_catalog(conn: Connection, clock: Clock, region: str = "RegionOne") -> None:
    """The `default` domain, one region, and the four services with their endpoints (public URL relative)."""
    if not conn.execute(select(g.domains.c.id).where(g.domains.c.id == "default")).first():
        conn.execute(insert(g.domains).values(id="default", name="Default", description="The default domain",
                                              enabled=True, created_at=clock.now()))
    if not conn.execute(select(g.regions.c.id).where(g.regions.c.id == region)).first():
        conn.execute(insert(g.regions).values(id=region, description="", parent_region_id=None))
    for kind, name, path in SERVICES:
        if conn.execute(select(g.services.c.id).where(g.services.c.id == name)).first():
            continue
        conn.execute(insert(g.services).values(id=name, type=kind, name=name, description="", enabled=True))
        conn.execute(insert(g.endpoints), [
            {"id": f"{name}-{iface}", "service_id": name, "interface": iface, "region_id": region,
             "url": PUBLIC_URL + path, "enabled": True} for iface in INTERFACES])


def _seed_identity(conn: Connection, creds: SeedCredentials, clock: Clock) -> None:
    _seed_catalog(conn, clock)
    now = clock.now()
    role_ids = {}
    for name in ROLES:
        role_ids[name] = _id_of(conn, g.roles, name) or _insert_id(conn, g.roles, {"name": name})
    for project, user, password, role in (
        ("admin", "admin", creds.admin_password, "admin"),
        ("demo", "demo", creds.demo_password, "member"),
    ):
        pid = _id_of(conn, g.projects, project) or _insert_id(
            conn, g.projects, {"name": project, "domain_id": "default", "description": f"{project} project",
                               "enabled": True, "created_at": now})
        uid = _id_of(conn, g.users, user) or _insert_id(
            conn, g.users, {"name": user, "domain_id": "default", "password_hash": hash_password(password),
                            "default_project_id": pid, "enabled": True, "created_at": now})
        exists = conn.execute(select(g.role_assignments).where(
            g.role_assignments.c.user_id == uid, g.role_assignments.c.project_id == pid,
            g.role_assignments.c.role_id == role_ids[role])).first()
        if not exists:
            conn.execute(insert(g.role_assignments).values(user_id=uid, project_id=pid, role_id=role_ids[role]))


def _insert_id(conn: Connection, table: Table, values: dict[str, object]) -> str:
    new_id = uuid.uuid4().hex
    conn.execute(insert(table).values(id=new_id, **values))
    return new_id


def _seed_flavors(conn: Connection, clock: Clock) -> None:
    have = set(conn.execute(select(g.flavors.c.id)).scalars())
    rows: list[dict[str, Any]] = [
        {"id": fid, "name": name, "vcpus": vcpus, "ram_mb": ram, "disk_gb": disk, "ephemeral_gb": 0, "swap_mb": 0,
         "rxtx_factor": "1.0", "is_public": True, "description": None, "extra_specs": {}, "created_at": clock.now()}
        for fid, name, vcpus, ram, disk in FLAVORS if fid not in have
    ]
    if rows:
        conn.execute(insert(g.flavors), rows)


def _seed_network(conn: Connection, clock: Clock) -> None:
    if conn.execute(select(g.networks.c.id).where(g.networks.c.id == PUBLIC_NETWORK_ID)).first():
        return
    admin_project = _id_of(conn, g.projects, "admin")
    now = clock.now()
    conn.execute(insert(g.networks).values(
        id=PUBLIC_NETWORK_ID, name="public", project_id=admin_project, description="flat public network",
        status="ACTIVE", admin_state_up=True, shared=True, external=True, mtu=1500, network_type="flat",
        physical_network="public", segmentation_id=None, created_at=now, updated_at=now))
    conn.execute(insert(g.subnets).values(
        id=PUBLIC_SUBNET_ID, network_id=PUBLIC_NETWORK_ID, name="public-v4", project_id=admin_project,
        description="", ip_version=4, cidr="203.0.113.0/24", gateway_ip="203.0.113.1", enable_dhcp=False,
        # The DNS server (.53) is no host's address: the pool goes around it.
        allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.52"},
                          {"start": "203.0.113.54", "end": "203.0.113.250"}],
        dns_nameservers=["203.0.113.53"], host_routes=[], segment_id=None, created_at=now, updated_at=now))


def _seed_image(conn: Connection, image_dir: Path, clock: Clock) -> None:
    if conn.execute(select(g.images.c.id).where(g.images.c.id == TINY_IMAGE_ID)).first():
        return
    # A small raw disk for the simulated hypervisors; the real-guest tests upload their own image.
    data = b"CANOPY-TINY-IMAGE\n" + bytes(64 * 1024 - 18)
    image_dir.mkdir(parents=True, exist_ok=True)
    (image_dir / TINY_IMAGE_ID).write_bytes(data)
    now = clock.now()
    conn.execute(insert(g.images).values(
        id=TINY_IMAGE_ID, name="canopy-tiny", owner=_id_of(conn, g.projects, "admin"), visibility="public",
        status="active", container_format="bare", disk_format="raw", size=len(data),
        checksum=hashlib.md5(data, usedforsecurity=False).hexdigest(), os_hash_algo="sha512",
        os_hash_value=hashlib.sha512(data).hexdigest(), min_disk=0, min_ram=0, protected=False, tags=[],
        properties={"hw_architecture": "x86_64"}, created_at=now, updated_at=now))
