"""Typed bus messages. Each kind has a schema version; a receiver accepts its own version and the
one before it, so agents can be upgraded a few at a time."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class UnsupportedVersion(ValueError):
    """A message whose schema version this receiver cannot read."""


_REGISTRY: dict[str, type[Message]] = {}


class Message(BaseModel):
    """Base of every message on the bus: `kind` names it, `version` is its schema version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
                raise TypeError(f"message kind {cls.kind!r} is registered twice")
            _REGISTRY[cls.kind] = cls

    @classmethod
    def upgrade(cls, body: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Turn a body of the previous version into this one (by default: new fields take defaults)."""
        return body


def decode_message(kind: str, version: int, body: dict[str, Any]) -> Message:
    """Build the typed message for `kind`, upgrading a body one version old."""
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise UnsupportedVersion(f"unknown message kind {kind!r}")
    if version == cls.version:
        return cls.model_validate(body)
    if version == cls.version - 1:
        return cls.model_validate(cls.upgrade(dict(body), version))
    raise UnsupportedVersion(f"{kind} version {version} is not readable here (this side speaks {cls.version})")


def message_kinds() -> dict[str, type[Message]]:
    return dict(_REGISTRY)


class Ack(Message):
    """An empty reply."""

    kind: ClassVar[str] = "ack"
