"""Compute API: keypairs, per user. Import a public key (validated, fingerprinted) or have one generated
(RSA 2048, the private key returned once); list, show and delete."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import string
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute.common import cloud_of
from canopy.api.compute.flavors import collection_links
from canopy.api.compute.microversion import mv
from canopy.api.errors import ApiError, bad_request, conflict, forbidden
from canopy.api.http import ctx, empty_response, json_response, page_params, read_object, route, validate
from canopy.clock import isotime
from canopy.db import tables_global as g

k = g.keypairs.c
MAX_KEYPAIRS = 100
SAFE_CHARS = frozenset("_- " + string.digits + string.ascii_letters)
SSH_TYPES = ("ssh-rsa", "ssh-ed25519", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521")
GENERATED_COMMENT = "Generated-by-Canopy"


class KeypairCreate(BaseModel):
    """The body of POST /os-keypairs (`type` from 2.2, `user_id` from 2.10)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=255)
    public_key: str | None = None
    type: Literal["ssh", "x509"] = "ssh"
    user_id: str | None = None


def invalid_keypair(reason: str) -> ApiError:
    return bad_request(f"Keypair data is invalid: {reason}")


def keypair_not_found(name: str, user_id: str) -> ApiError:
    return ApiError(404, f"Keypair {name} not found for user {user_id}")


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def ssh_fingerprint(public_key: str) -> str:
    """Validate an OpenSSH public key line; its fingerprint is the MD5 of the decoded key blob."""
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in SSH_TYPES:
        raise invalid_keypair("failed to generate fingerprint")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise invalid_keypair("failed to generate fingerprint") from None
    return _colon_hex(hashlib.md5(blob, usedforsecurity=False).digest())


def x509_fingerprint(pem: str) -> str:
    """Validate a PEM certificate; its fingerprint is the SHA-1 of the DER form."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise invalid_keypair(f"failed to generate X509 fingerprint. Error message: {exc}") from None
    return _colon_hex(cert.fingerprint(hashes.SHA1()))


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def generate_ssh() -> tuple[str, str, str]:
    """A new RSA 2048 key: (private key PEM, OpenSSH public key line, fingerprint)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {GENERATED_COMMENT}"
    return _private_pem(key), line, ssh_fingerprint(line)


def generate_x509(user_id: str, now: dt.datetime) -> tuple[str, str, str]:
    """A new RSA key and a self-signed certificate for it: (private key PEM, certificate PEM, fingerprint)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650)).sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return _private_pem(key), pem, x509_fingerprint(pem)


def _check_name(name: str) -> None:
    if any(ch not in SAFE_CHARS for ch in name):
        raise invalid_keypair("Keypair name contains unsafe characters")


def target_user(request: Request, explicit: str | None) -> str:
    """The user whose keypairs a request acts on: the caller, or (admins, 2.10+) the one it names."""
    rc = ctx(request)
    if explicit is None or mv(request) < (2, 10) or explicit == rc.user_id:
        return rc.user_id or ""
    if not rc.is_admin:
        raise forbidden()
    return explicit


def render(row: dict[str, Any], version: tuple[int, int], full: bool) -> dict[str, Any]:
    """A keypair as Nova shows it: in a list (brief) or on its own (full)."""
    out: dict[str, Any] = {"name": row["name"], "public_key": row["public_key"], "fingerprint": row["fingerprint"]}
    if version >= (2, 2):
        out["type"] = row["type"]
    if full:
        out.update(user_id=row["user_id"], id=row["id"], created_at=isotime(row["created_at"]),
                   updated_at=None, deleted=False, deleted_at=None)
    return out


def _insert(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    user_id, name = values["user_id"], values["name"]
    count = conn.execute(select(func.count()).select_from(g.keypairs).where(k.user_id == user_id)).scalar_one()
    if count >= MAX_KEYPAIRS:
        raise forbidden("Quota exceeded, too many key pairs.")
    if conn.execute(select(k.id).where(k.user_id == user_id, k.name == name)).first():
        raise conflict(f"Key pair '{name}' already exists.")
    key = conn.execute(insert(g.keypairs).values(**values)).inserted_primary_key
    return {**values, "id": key[0] if key else None}


async def create_keypair(request: Request) -> Response:
    """POST /os-keypairs: import `public_key`, or generate a key and return its private half once."""
    raw = await read_object(request, "keypair")
    version = mv(request)
    for key, since in (("type", (2, 2)), ("user_id", (2, 10))):
        if key in raw and version < since:
            raise bad_request(f"Invalid input for field/attribute keypair. Additional properties are not "
                              f"allowed ('{key}' was unexpected)")
    body = validate(KeypairCreate, raw, "keypair")
    _check_name(body.name)
    user_id = target_user(request, body.user_id)
    cloud = cloud_of(request)
    now = cloud.clock.now()
    private_key = None
    if body.public_key is not None:
        fp = x509_fingerprint(body.public_key) if body.type == "x509" else ssh_fingerprint(body.public_key)
        public_key = body.public_key
    elif body.type == "x509":
        private_key, public_key, fp = generate_x509(user_id, now)
    else:
        private_key, public_key, fp = generate_ssh()
    values = {"user_id": user_id, "name": body.name, "type": body.type, "public_key": public_key,
              "fingerprint": fp, "created_at": now}
    try:
        row = await cloud.dbs.global_db.write(_insert, values)
    except IntegrityError:
        raise conflict(f"Key pair '{body.name}' already exists.") from None
    out = render(row, version, False)
    out["user_id"] = user_id
    if private_key is not None:
        out["private_key"] = private_key
    return json_response({"keypair": out}, status=201 if version >= (2, 2) else 200)


def _list(conn: Connection, user_id: str, limit: int | None, marker: str | None) -> list[dict[str, Any]]:
    q = select(g.keypairs).where(k.user_id == user_id).order_by(k.name)
    if marker is not None:
        if conn.execute(select(k.id).where(k.user_id == user_id, k.name == marker)).first() is None:
            raise bad_request(f"Marker {marker} could not be found.")
        q = q.where(k.name > marker)
    if limit is not None:
        q = q.limit(limit)
    return [dict(r) for r in conn.execute(q).mappings()]


async def list_keypairs(request: Request) -> Response:
    """GET /os-keypairs: the caller's keypairs (an admin may name another user at 2.10+)."""
    version = mv(request)
    user_id = target_user(request, request.query_params.get("user_id"))
    limit: int | None = None
    marker: str | None = None
    if version >= (2, 35):
        limit, marker = page_params(request, cloud_of(request).settings.api.max_page_size)
    rows = await cloud_of(request).dbs.global_db.read(_list, user_id, limit, marker)
    body: dict[str, Any] = {"keypairs": [{"keypair": render(r, version, False)} for r in rows]}
    if limit is not None:
        links = collection_links(request, len(rows), limit, rows[-1]["name"] if rows else None)
        if links:
            body["keypairs_links"] = links
    return json_response(body)


def _get(conn: Connection, user_id: str, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(g.keypairs).where(k.user_id == user_id, k.name == name)).mappings().first()
    return dict(row) if row else None


async def show_keypair(request: Request) -> Response:
    """GET /os-keypairs/{name}."""
    name = request.path_params["name"]
    user_id = target_user(request, request.query_params.get("user_id"))
    row = await cloud_of(request).dbs.global_db.read(_get, user_id, name)
    if row is None:
        raise keypair_not_found(name, user_id)
    return json_response({"keypair": render(row, mv(request), True)})


def _delete(conn: Connection, user_id: str, name: str) -> None:
    if conn.execute(delete(g.keypairs).where(k.user_id == user_id, k.name == name)).rowcount == 0:
        raise keypair_not_found(name, user_id)


async def delete_keypair(request: Request) -> Response:
    """DELETE /os-keypairs/{name}."""
    user_id = target_user(request, request.query_params.get("user_id"))
    await cloud_of(request).dbs.global_db.write(_delete, user_id, request.path_params["name"])
    return empty_response(204 if mv(request) >= (2, 2) else 202)


ROUTES: list[BaseRoute] = [
    route("/v2.1/os-keypairs", list_keypairs, ["GET"], "compute:keypairs"),
    route("/v2.1/os-keypairs", create_keypair, ["POST"], "compute:keypairs:create"),
    route("/v2.1/os-keypairs/{name}", show_keypair, ["GET"], "compute:keypairs:show"),
    route("/v2.1/os-keypairs/{name}", delete_keypair, ["DELETE"], "compute:keypairs:delete"),
]
