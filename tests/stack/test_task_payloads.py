"""Task payloads are typed and versioned: a conductor finishes tasks an api of the previous version wrote."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from canopy.db import tables_cell as c
from canopy.rpc.base import Envelope
from canopy.rpc.calls import WakeTask
from canopy.rpc.messages import UnsupportedVersion, decode_message
from canopy.rpc.tasks import PAYLOAD_VERSION, ActionPayload, BuildPayload, FlavorSnapshot, parse_payload
from tests.clouds import V, server_body, wait_for_server

FLAVOR_V1 = {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1, "ephemeral": 0, "swap": 0,
             "extra_specs": {}}


def as_version_1(payload: dict[str, Any]) -> dict[str, Any]:
    """A version-2 build payload in the shape the api wrote before payloads had a version."""
    old = {k: v for k, v in payload.items() if k != "version"}
    f = payload["flavor"]
    old["flavor"] = {"id": f["id"], "name": f["name"], "vcpus": f["vcpus"], "ram": f["memory_mb"],
                     "disk": f["disk_gb"], "ephemeral": f["ephemeral_gb"], "swap": f["swap_mb"],
                     "extra_specs": f["extra_specs"]}
    old["scheduler_hints"] = {}
    return old


def test_a_version_1_flavor_is_read_with_the_version_2_names() -> None:
    payload = parse_payload("build", {"flavor": FLAVOR_V1, "image_id": "i", "name": "a", "hostname": "a",
                                      "project_id": "p", "networks": [], "scheduler_hints": {}})
    assert isinstance(payload, BuildPayload) and payload.version == PAYLOAD_VERSION
    assert (payload.flavor.memory_mb, payload.flavor.disk_gb) == (512, 1)
    assert payload.flavor.instance_view() == FLAVOR_V1  # an instance row keeps the flavor as it always did


def test_a_payload_of_a_later_version_is_refused_with_a_clear_error() -> None:
    with pytest.raises(UnsupportedVersion, match="build task payload version 3"):
        parse_payload("build", {"version": 3, "flavor": FLAVOR_V1})


def test_action_payloads_read_the_old_dicts_of_every_kind() -> None:
    assert parse_payload("stop_soft", {"timeout_s": 30}) == ActionPayload(timeout_s=30)
    assert parse_payload("delete", {}) == ActionPayload()
    resize = parse_payload("resize", {"flavor": FLAVOR_V1})
    assert isinstance(resize, ActionPayload) and resize.flavor == FlavorSnapshot(**{
        "id": "1", "name": "m1.tiny", "vcpus": 1, "memory_mb": 512, "disk_gb": 1})


async def _task_without_wakeup(stack: Any, monkeypatch: Any) -> tuple[str, dict[str, Any]]:
    """A server created while wake-ups are lost: its id and its task row."""
    real_cast = stack.cloud.bus.cast

    async def drop_wakeups(target: Any, msg: Any) -> None:
        if not isinstance(msg, WakeTask):
            await real_cast(target, msg)

    monkeypatch.setattr(stack.cloud.bus, "cast", drop_wakeups)
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(), headers=V)
    assert resp.status_code == 202, resp.text
    monkeypatch.setattr(stack.cloud.bus, "cast", real_cast)
    sid = str(resp.json()["server"]["id"])
    row = await stack.cloud.dbs.default_cell.read(lambda conn: conn.execute(
        select(c.tasks).where(c.tasks.c.instance_uuid == sid)).mappings().one())
    assert row["payload"]["version"] == PAYLOAD_VERSION
    return sid, dict(row)


async def test_a_version_1_task_row_boots_to_active(stack: Any, monkeypatch: Any) -> None:
    sid, row = await _task_without_wakeup(stack, monkeypatch)
    old = as_version_1(row["payload"])
    await stack.cloud.dbs.default_cell.write(lambda conn: conn.execute(
        update(c.tasks).where(c.tasks.c.id == row["id"]).values(payload=old)))
    await stack.conductor.run_task(row["id"])  # no record: the conductor reads the row
    server = await wait_for_server(stack.api, sid, {"ACTIVE", "ERROR"})
    assert server["status"] == "ACTIVE", server


async def test_a_version_1_wake_task_boots_to_active(stack: Any, monkeypatch: Any) -> None:
    sid, row = await _task_without_wakeup(stack, monkeypatch)
    task = {"id": row["id"], "instance_uuid": sid, "kind": "build", "action_id": row["action_id"],
            "payload": as_version_1(row["payload"]), "request_id": row["request_id"], "attempts": 0,
            "created_at": None}
    msg = decode_message("wake_task", 1, {"task_id": row["id"], "instance_uuid": sid, "task_kind": "build",
                                          "task": task})
    assert isinstance(msg, WakeTask) and msg.task is not None and isinstance(msg.task.payload, BuildPayload)
    await stack.conductor.handle(msg)
    server = await wait_for_server(stack.api, sid, {"ACTIVE", "ERROR"})
    assert server["status"] == "ACTIVE", server


def test_a_wake_task_travels_with_its_typed_payload() -> None:
    payload = BuildPayload(flavor=FlavorSnapshot(vcpus=1, memory_mb=512, disk_gb=1), image_id="i", name="a",
                           hostname="a", project_id="p")
    msg = WakeTask(task_id=1, instance_uuid="u", task_kind="build",
                   task={"id": 1, "instance_uuid": "u", "kind": "build", "request_id": "r", "payload": payload})
    env = Envelope.decode(Envelope.wrap(msg).encode())
    back = decode_message(env.kind, env.version, env.body)
    assert isinstance(back, WakeTask) and back == msg
