"""Stateless signed tokens: any api process with the shared secret validates one without the database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass


class InvalidToken(Exception):
    """The token is malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class TokenData:
    user_id: str
    project_id: str
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float
    audit_id: str
    methods: tuple[str, ...] = ("password",)


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
        """A new token and what it says."""
        now = time.time() if now is None else now
        data = TokenData(user_id, project_id, roles, now, now + self.ttl_s, _b64(secrets.token_bytes(12)), methods)
        payload = json.dumps([user_id, project_id, list(roles), now, data.expires_at, data.audit_id,
                              list(methods)], separators=(",", ":")).encode()
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
        body, _, sig = token.partition(".")
        if not body or not sig or not hmac.compare_digest(sig, self._sign(body)):
            raise InvalidToken("The request you have made requires authentication.")
        try:
            u, p, r, iat, exp, audit, methods = json.loads(_unb64(body))
        except (ValueError, TypeError) as exc:
            raise InvalidToken("The request you have made requires authentication.") from exc
        return TokenData(u, p, tuple(r), iat, exp, audit, tuple(methods))

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:24])
