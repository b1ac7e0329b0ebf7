"""Versioned notifications on the bus topic "notifications": one start/end (or error) pair per task, in
the shape a consumer of OpenStack's versioned notifications reads."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from canopy.observability.notifications import Notification, instance_payload, subscribe
from tests.clouds import V, server_body, wait_for_server


def listen(stack: Any) -> list[Notification]:
    got: list[Notification] = []

    async def consumer(msg: Any) -> None:
        assert isinstance(msg, Notification)
        got.append(msg)

    subscribe(stack.cloud.bus, consumer)
    return got


async def settle(got: list[Notification], count: int) -> None:
    for _ in range(100):
        if len(got) >= count:
            return
        await asyncio.sleep(0.01)


def data(note: Notification) -> dict[str, Any]:
    return note.payload["nova_object.data"]  # type: ignore[no-any-return]


async def test_a_servers_life_as_notifications(stack: Any) -> None:
    got = listen(stack)
    resp = await stack.api.post("/compute/v2.1/servers", json=server_body(), as_user="demo", headers=V)
    sid, create_id = resp.json()["server"]["id"], resp.headers["x-openstack-request-id"]
    await wait_for_server(stack.api, sid, {"ACTIVE"}, as_user="demo")
    await settle(got, 2)
    start, end = got[:2]
    assert [start.event_type, end.event_type] == ["instance.create.start", "instance.create.end"]
    assert end.priority == "INFO" and end.publisher_id == "canopy-conductor:conductor-0"
    assert end.payload["nova_object.name"] == "InstanceActionPayload"
    assert end.payload["nova_object.namespace"] == "nova" and end.payload["nova_object.version"]
    d = data(end)
    assert d["uuid"] == sid and d["request_id"] == create_id and d["state"] == "active"
    assert d["power_state"] == "running" and d["task_state"] is None and d["launched_at"].endswith("Z")
    assert d["host"].startswith("hv-") and d["display_name"] == "web-1" and d["tenant_id"]
    flavor = d["flavor"]["nova_object.data"]
    assert d["flavor"]["nova_object.name"] == "FlavorPayload" and flavor["memory_mb"] == 512 and flavor["vcpus"] == 1
    ip = d["ip_addresses"][0]["nova_object.data"]
    assert ipaddress.ip_address(ip["address"]) in ipaddress.ip_network("203.0.113.0/24") and ip["label"] == "public"
    assert data(start)["state"] == "building" and data(start)["action_initiator_user"]

    for action, event, state in (({"os-stop": None}, "instance.power_off", "stopped"),
                                 ({"os-start": None}, "instance.power_on", "active"),
                                 ({"reboot": {"type": "SOFT"}}, "instance.reboot", "active")):
        got.clear()
        await stack.api.post(f"/compute/v2.1/servers/{sid}/action", json=action, as_user="demo")
        await settle(got, 2)
        assert [n.event_type for n in got] == [f"{event}.start", f"{event}.end"], got
        assert data(got[1])["state"] == state
    got.clear()
    await stack.api.delete(f"/compute/v2.1/servers/{sid}", as_user="demo")
    await settle(got, 2)
    assert [n.event_type for n in got] == ["instance.delete.start", "instance.delete.end"]
    assert data(got[1])["state"] == "deleted" and data(got[1])["terminated_at"]


async def test_a_failed_build_is_an_error_notification_with_the_cause(stack: Any) -> None:
    got = listen(stack)
    for driver in stack.drivers.values():
        driver.fail_on("spawn", "could not open disk: Permission denied")
    sid = (await stack.api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    await wait_for_server(stack.api, sid, {"ERROR"})
    await settle(got, 2)
    error = got[-1]
    assert error.event_type == "instance.create.error" and error.priority == "ERROR"
    fault = data(error)["fault"]
    assert fault["nova_object.name"] == "ExceptionPayload"
    assert fault["nova_object.data"]["exception"] == "DriverError"
    assert "Permission denied" in fault["nova_object.data"]["exception_message"]


async def test_notifications_can_be_turned_off(stack: Any) -> None:
    got = listen(stack)
    stack.conductor.notifier.enabled = False
    sid = (await stack.api.post("/compute/v2.1/servers", json=server_body(), headers=V)).json()["server"]["id"]
    await wait_for_server(stack.api, sid, {"ACTIVE"})
    await asyncio.sleep(0.05)
    assert got == []


def test_payload_of_a_row_with_what_a_row_lacks() -> None:
    payload = instance_payload({"uuid": "u-1", "power_state": 4, "vm_state": "stopped"}, request_id=None)
    d = payload["nova_object.data"]
    assert d["power_state"] == "shutdown" and d["state"] == "stopped" and d["ip_addresses"] == []
    assert d["flavor"]["nova_object.data"]["memory_mb"] == 0 and d["fault"] is None
