"""The audit record's pure parts: the target named by a path, the id a create answered with, CADF."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from canopy.api.audit import created_id, new_record, target_from_path, to_cadf


@pytest.mark.parametrize(("params", "target"), [
    ({}, None),
    ({"server_id": "s1"}, "s1"),
    ({"server_id": "s1", "key": "k"}, "s1"),            # metadata key: the server is the resource
    ({"project_id": "p", "user_id": "u"}, "u"),          # the last id names the resource
    ({"name": "kp"}, "kp"),
])
def test_target_from_path(params: dict[str, Any], target: str | None) -> None:
    assert target_from_path(params) == target


@pytest.mark.parametrize(("body", "found"), [
    (b'{"server": {"id": "abc", "links": []}}', "abc"),
    (b'{"id": "img", "name": "cirros"}', "img"),
    (b'{"keypair": {"name": "k1", "public_key": "ssh-rsa"}}', "k1"),
    (b'{"token": {"methods": ["password"]}}', None),
    (b'{"a": {"id": "1"}, "b": {"id": "2"}}', None),     # two roots: which one?
    (b'[1, 2]', None),
    (b'not json', None),
    (b'{"server": {"id": 5}}', None),
])
def test_created_id(body: bytes, found: str | None) -> None:
    assert created_id(body) == found


@pytest.mark.parametrize(("status", "outcome"), [(201, "success"), (204, "success"), (403, "failure"),
                                                 (500, "failure")])
def test_cadf_event(status: int, outcome: str) -> None:
    record = new_record(at=dt.datetime(2026, 12, 8, 1, 2, 3), request_id="req-1", user_id="u", user_name="demo",
                        project_id="p", domain_id="default", service="compute", method="DELETE",
                        route="compute:servers:delete", path="/compute/v2.1/servers/s", target_id="s",
                        source="203.0.113.9", status=status)
    e = to_cadf(record)
    assert e["eventType"] == "activity" and e["action"] == "delete" and e["outcome"] == outcome
    assert e["reason"] == {"reasonType": "HTTP", "reasonCode": str(status)}
    assert e["initiator"]["id"] == "u" and e["initiator"]["host"]["address"] == "203.0.113.9"
    assert e["target"]["id"] == "s" and e["requestId"] == "req-1"
    assert e["eventTime"] == "2026-12-08T01:02:03.000000+0000"
