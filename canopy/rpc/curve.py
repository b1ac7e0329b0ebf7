"""CURVE for the ZeroMQ bus: encrypted, authenticated links, and a host's identity bound to its key.

The control services (conductor, scheduler, all-in-one) share one server key pair; each agent process
holds its own client key pair. A ZAP handler on the control side lets in only the client public keys it
lists (`[bus] curve_allowed_clients`: key → the host names that key speaks for; `"*"` for control
services, which speak for no host and may name any). Past the handshake, every message a ROUTER receives
carries its sender's key (ZeroMQ's `User-Id`): the transport keeps only the routes a key may announce,
and runs each handler with the sender's allowed hosts in `sender_hosts`, so a handler refuses a message
that names another host (`check_sender`: the conductor's RegisterHost, heartbeats, host syncs). A
process hosting several simulated hosts holds one key listed with all of them.

Keys are ZeroMQ's certificate files (`zmq.auth.load_certificate`); `canopy bus keygen` writes them 0600.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

ANY_HOST = "*"
ZAP_DOMAIN = "canopy"
# The hosts the sender of the message being handled may speak for; None: not restricted (a local bus,
# CURVE off, a reply over our own connection, or a control service).
sender_hosts: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("sender_hosts", default=None)


class ImpersonationError(PermissionError):
    """A message names a host its sender's key is not bound to."""


@dataclass(frozen=True)
class CurveKeys:
    """What one process needs: the server's key pair (binders), its own client key pair (connectors), the
    control services' public key, and the allowed client keys with their hosts (binders)."""

    server_public: bytes = b""
    server_secret: bytes = b""
    client_public: bytes = b""
    client_secret: bytes = b""
    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def hosts_of(self, client_key: str) -> frozenset[str] | None:
        """The hosts a client key may speak for; None: any (a control service's key)."""
        hosts = self.allowed.get(client_key, frozenset())
        return None if ANY_HOST in hosts else hosts


def check_sender(host: str | None) -> None:
    """Refuse (ImpersonationError) when the message being handled names a host its sender is not bound to."""
    allowed = sender_hosts.get()
    if allowed is not None and host and host not in allowed:
        raise ImpersonationError(f"this bus key is not bound to host {host!r}")


def write_keypair(path: Path) -> tuple[str, str]:
    """Write a new key pair: `path` (public and secret key) and `path`.pub (public only), both 0600 from
    the start. Returns the (public, secret) keys, Z85."""
    public, secret = zmq.curve_keypair()
    pub, sec = public.decode(), secret.decode()
    head = "#   ZeroMQ CURVE certificate written by `canopy bus keygen`\nmetadata\ncurve\n"
    _write_private(path, f'{head}    public-key = "{pub}"\n    secret-key = "{sec}"\n')
    _write_private(Path(f"{path}.pub"), f'{head}    public-key = "{pub}"\n')
    return pub, sec


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def load_keypair(path: str) -> tuple[bytes, bytes]:
    """The (public, secret) Z85 keys of a key file; refused when it has no secret key."""
    public, secret = zmq.auth.load_certificate(path)
    if not secret:
        raise ValueError(f"{path} holds no secret key")
    return public, secret


def keys_from_settings(bus: Any) -> CurveKeys | None:
    """The CURVE keys `[bus]` names (None: CURVE is off)."""
    if not (bus.curve_server_secret_file or bus.curve_client_secret_file or bus.curve_server_public_key):
        return None
    server_public, server_secret = b"", b""
    if bus.curve_server_secret_file:
        server_public, server_secret = load_keypair(bus.curve_server_secret_file)
    if bus.curve_server_public_key:
        server_public = bus.curve_server_public_key.encode()
    client_public, client_secret = (load_keypair(bus.curve_client_secret_file) if bus.curve_client_secret_file
                                    else (b"", b""))
    allowed = {k: frozenset(v) for k, v in bus.curve_allowed_clients.items()}
    return CurveKeys(server_public, server_secret, client_public, client_secret, allowed)


class _AllowListed:
    """The ZAP handler's question: is this client key listed?"""

    def __init__(self, keys: CurveKeys) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key.decode() in self.keys.allowed


def start_authenticator(ctx: zmq.asyncio.Context, keys: CurveKeys) -> AsyncioAuthenticator:
    """A ZAP handler on `ctx` admitting only the listed client keys (CURVE), for the binding side."""
    auth = AsyncioAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=_AllowListed(keys))
    return auth


def make_server(sock: zmq.Socket[Any], keys: CurveKeys) -> None:
    """Make a socket the CURVE server side (before it binds)."""
    if not keys.server_secret:
        raise ValueError("CURVE: a binding service needs [bus] curve_server_secret_file")
    sock.curve_server = True
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    sock.zap_domain = ZAP_DOMAIN.encode()


def make_client(sock: zmq.Socket[Any], keys: CurveKeys) -> None:
    """Make a socket a CURVE client of the control services (before it connects)."""
    if not (keys.server_public and keys.client_secret):
        raise ValueError("CURVE: a connecting process needs [bus] curve_client_secret_file and the control "
                         "services' public key (curve_server_public_key or curve_server_secret_file)")
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.client_public
    sock.curve_secretkey = keys.client_secret
