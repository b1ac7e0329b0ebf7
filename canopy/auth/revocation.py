"""Revocation events, as Keystone's: each says "tokens matching these fields, issued at or before this
moment, no longer stand". A pure index answers for one token in constant time.

    event fields set          written when
    audit_id                  a token is revoked (DELETE /auth/tokens): it and every token made from it
    user_id                   a user is disabled, deleted, changes password, leaves a group
    user_id + project_id      a role on a project is removed from the user
    project_id                a project is disabled or deleted
    domain_id                 a domain is disabled or deleted (tokens of its users and projects)
    app_cred_id               an application credential is deleted
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from canopy.auth.tokens import TokenData

FIELDS = ("audit_id", "user_id", "project_id", "domain_id", "app_cred_id")


@dataclass(frozen=True, slots=True)
class RevocationEvent:
    issued_before: float
    audit_id: str | None = None
    user_id: str | None = None
    project_id: str | None = None
    domain_id: str | None = None
    app_cred_id: str | None = None

    def shape(self) -> tuple[str, ...]:
        """The names of the fields this event matches on."""
        return tuple(f for f in FIELDS if getattr(self, f) is not None)

    def key(self) -> tuple[str, ...]:
        return tuple(str(getattr(self, f)) for f in self.shape())


def _token_keys(data: TokenData, shape: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every key of this shape a token answers to (several audit ids and domains may apply)."""
    options: dict[str, tuple[str, ...]] = {
        "audit_id": data.audit_chain, "user_id": (data.user_id,), "project_id": (data.project_id,),
        "domain_id": tuple({*data.domains, data.domain_id} - {""}), "app_cred_id": (data.app_cred_id,),
    }
    keys: list[tuple[str, ...]] = [()]
    for name in shape:
        keys = [k + (v,) for k in keys for v in options[name] if v]
    return keys


class RevocationIndex:
    """The latest `issued_before` per event shape and key; a token is revoked if it was issued at or before."""

    def __init__(self, events: Iterable[RevocationEvent] = ()) -> None:
        self._by_shape: dict[tuple[str, ...], dict[tuple[str, ...], float]] = {}
        self.add(events)

    def add(self, events: Iterable[RevocationEvent]) -> None:
        """Merge events (idempotent: adding one twice changes nothing)."""
        for e in events:
            shape = e.shape()
            if not shape:
                continue
            keyed = self._by_shape.setdefault(shape, {})
            key = e.key()
            keyed[key] = max(keyed.get(key, float("-inf")), e.issued_before)

    def is_revoked(self, data: TokenData) -> bool:
        """Whether any event covers this token."""
        for shape, keyed in self._by_shape.items():
            for key in _token_keys(data, shape):
                before = keyed.get(key)
                if before is not None and data.issued_at <= before:
                    return True
        return False

    def __len__(self) -> int:
        return sum(len(k) for k in self._by_shape.values())
