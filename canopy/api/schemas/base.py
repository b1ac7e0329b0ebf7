"""What every response model shares: strict types (a string is not an integer), extra keys allowed (an
extension may add some), OpenStack's key spellings as aliases, and microversion ranges on fields."""

from __future__ import annotations

import functools
import operator
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

Version = tuple[int, int]
MIN_KEY, MAX_KEY = "x-openstack-min-version", "x-openstack-max-version"


class Body(BaseModel):
    """The base of every response model."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=False, frozen=True)


def since(version: str, alias: str | None = None, default: Any = ..., **kw: Any) -> Any:
    """A field present from compute microversion `version` on (OpenStack's "New in version")."""
    return Field(default, alias=alias, json_schema_extra={MIN_KEY: version}, **kw)


def until(version: str, alias: str | None = None, default: Any = ..., **kw: Any) -> Any:
    """A field present up to and including `version` (removed in the next one)."""
    return Field(default, alias=alias, json_schema_extra={MAX_KEY: version}, **kw)


def between(low: str, high: str, alias: str | None = None, default: Any = ..., **kw: Any) -> Any:
    """A field present from `low` up to and including `high`."""
    return Field(default, alias=alias, json_schema_extra={MIN_KEY: low, MAX_KEY: high}, **kw)


def parse_version(text: str) -> Version:
    """"2.47" → (2, 47)."""
    major, _, minor = text.partition(".")
    return int(major), int(minor)


def _present(extra: Any, mv: Version) -> bool:
    if not isinstance(extra, dict):
        return True
    low, high = extra.get(MIN_KEY), extra.get(MAX_KEY)
    return (low is None or parse_version(low) <= mv) and (high is None or mv <= parse_version(high))


@functools.cache
def at_version(model: type[Body], mv: Version) -> type[Body]:
    """The model as it is at compute microversion `mv`: only the fields present then, nested models too."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if _present(info.json_schema_extra, mv):
            fields[name] = (_versioned(info.annotation, mv), info)
    return create_model(f"{model.__name__}_{mv[0]}_{mv[1]}", __base__=Body, **fields)


def _versioned(annotation: Any, mv: Version) -> Any:
    """An annotation with each Body inside it taken at `mv` (list[Server] → list[Server at mv])."""
    if isinstance(annotation, type) and issubclass(annotation, Body):
        return at_version(annotation, mv)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None or not args:
        return annotation
    new = tuple(_versioned(a, mv) for a in args)
    if new == args:
        return annotation
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, new)
    return origin[new] if len(new) > 1 else origin[new[0]]


@functools.cache
def partial(model: type[Body]) -> type[Body]:
    """The model with every field optional (for `fields=` responses): what is there must still be well typed."""
    fields: dict[str, Any] = {name: (typing.Optional[info.annotation], Field(None, alias=info.alias))  # noqa: UP045
                              for name, info in model.model_fields.items()}
    return create_model(f"{model.__name__}Partial", __base__=Body, **fields)


@functools.cache
def fielded(model: type[Body]) -> type[Body]:
    """An envelope whose resources may lack any attribute (the request selected some with `fields=`)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        inner: Any = info.annotation
        if isinstance(inner, type) and issubclass(inner, Body):
            inner = partial(inner)
        elif typing.get_origin(inner) is list and issubclass(typing.get_args(inner)[0], Body):
            inner = list[partial(typing.get_args(inner)[0])]  # type: ignore[misc]
        fields[name] = (inner, info)
    return create_model(f"{model.__name__}Fielded", __base__=Body, **fields)
