"""Stateless signed tokens: any api process with the shared secret validates one without the database.

Whether a genuine token still stands (revoked, user disabled, password changed, role removed) is not
the signature's business: canopy/auth/revocation.py answers that from the revocation events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field


class InvalidToken(Exception):
    """The token is malformed, forged, expired or revoked."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a token is scoped to: one project, one domain, the whole system, or nothing (unscoped)."""

    project_id: str = ""
    domain_id: str = ""
    system: bool = False

    @property
    def kind(self) -> str:
        if self.project_id:
            return "project"
        if self.domain_id:
            return "domain"
        return "system" if self.system else "unscoped"


@dataclass(frozen=True, slots=True)
class TokenData:
    user_id: str
    project_id: str
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float
    audit_id: str
    methods: tuple[str, ...] = ("password",)
    domain_id: str = ""           # the domain the token is scoped to
    system: bool = False          # a system-scoped token
    parent_audit_id: str = ""     # the token this one was made from (the `token` method): revoked with it
    domains: tuple[str, ...] = ()  # the domains of the user and project: a disabled domain revokes it
    app_cred_id: str = ""         # the application credential it was issued for

    @property
    def scope(self) -> Scope:
        return Scope(self.project_id, self.domain_id, self.system)

    @property
    def audit_chain(self) -> tuple[str, ...]:
        """Keystone's `audit_ids`: this token's, then the one it was rescoped from."""
        return (self.audit_id, self.parent_audit_id) if self.parent_audit_id else (self.audit_id,)


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What a new token will say, before it has times and an audit id."""

    user_id: str
    scope: Scope = field(default_factory=Scope)
    roles: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("password",)
    domains: tuple[str, ...] = ()
    parent: TokenData | None = None
    app_cred_id: str = ""
    expires_at: float | None = None   # an earlier end than the signer's TTL (application credentials)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and validates tokens with an HMAC over their payload."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        self._key = hashlib.sha256(secret.encode()).digest()
        self.ttl_s = ttl_s
        self._cache: dict[str, TokenData] = {}

    def issue(self, user_id: str, project_id: str, roles: tuple[str, ...],
              methods: tuple[str, ...] = ("password",), now: float | None = None) -> tuple[str, TokenData]:
        """A new project-scoped (or, with an empty project, unscoped) token and what it says."""
        return self.issue_for(TokenRequest(user_id, Scope(project_id), roles, methods), now)

    def issue_for(self, req: TokenRequest, now: float | None = None) -> tuple[str, TokenData]:
        """A new token for `req`; one made from another token never outlives it."""
        now = time.time() if now is None else now
        expires = now + self.ttl_s
        for limit in (req.expires_at, req.parent.expires_at if req.parent else None):
            if limit is not None:
                expires = min(expires, limit)
        parent_audit = (req.parent.parent_audit_id or req.parent.audit_id) if req.parent else ""
        data = TokenData(req.user_id, req.scope.project_id, req.roles, now, expires, _b64(secrets.token_bytes(12)),
                         req.methods, req.scope.domain_id, req.scope.system, parent_audit, req.domains,
                         req.app_cred_id)
        payload = json.dumps([data.user_id, data.project_id, list(data.roles), now, expires, data.audit_id,
                              list(data.methods), data.domain_id, data.system, parent_audit, list(data.domains),
                              data.app_cred_id], separators=(",", ":")).encode()
        body = _b64(payload)
        return f"{body}.{self._sign(body)}", data

    def validate(self, token: str, now: float | None = None) -> TokenData:
        """What a token says, if it is genuine and not expired."""
        now = time.time() if now is None else now
        data = self._cache.get(token)
        if data is None:
            data = self._decode(token)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[token] = data
        if data.expires_at <= now:
            raise InvalidToken("The token has expired.")
        return data

    def _decode(self, token: str) -> TokenData:
        if not token.isascii():  # compare_digest refuses non-ASCII text: such a token is simply not ours
            raise InvalidToken("The request you have made requires authentication.")
        body, _, sig = token.partition(".")
        if not body or not sig or not hmac.compare_digest(sig, self._sign(body)):
            raise InvalidToken("The request you have made requires authentication.")
        try:
            fields = json.loads(_unb64(body))
            u, p, r, iat, exp, audit, methods = fields[:7]
            extra = fields[7:] + [""] * (5 - len(fields[7:]))
            domain_id, system, parent, domains, app_cred = extra[:5]
            return TokenData(u, p, tuple(r), iat, exp, audit, tuple(methods), domain_id or "", bool(system),
                             parent or "", tuple(domains or ()), app_cred or "")
        except (ValueError, TypeError) as exc:
            raise InvalidToken("The request you have made requires authentication.") from exc

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:24])
