"""A server create's body is parsed once, hints included, before anything is looked up (no database here)."""

from __future__ import annotations

from typing import Any

import pytest

from canopy.api.compute.server_create import parse_create
from canopy.api.errors import ApiError

MV = (2, 87)
GROUP = "6f1c1e0e-8a41-4c1b-9a43-3d5d2b0f2f11"


def body(**hints: Any) -> dict[str, Any]:
    server = {"name": "web", "flavorRef": "no-such-flavor", "imageRef": "x", "networks": "none"}
    return {"server": server, "os:scheduler_hints": hints} if hints else {"server": server}


@pytest.mark.parametrize(("hints", "message"), [
    ({"group": "not-a-uuid"}, "field/attribute group"),
    ({"same_host": ["nope"]}, "field/attribute same_host"),
    ({"different_host": 3}, "field/attribute different_host"),
])
def test_a_bad_hint_is_refused_before_the_flavor_is_looked_up(hints: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_create(body(**hints), MV)
    assert info.value.status == 400 and message in info.value.message


def test_the_hints_are_parsed_with_the_server() -> None:
    req = parse_create({**body(), "OS-SCH-HNT:scheduler_hints": {"group": GROUP, "same_host": GROUP}}, MV)
    assert req.server.name == "web"
    assert (req.hints.group, req.hints.same_host, req.hints.different_host) == (GROUP, [GROUP], [])


def test_hints_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(ApiError, match="os:scheduler_hints"):
        parse_create({**body(), "os:scheduler_hints": ["group"]}, MV)
