"""`make run` restarted on the same data: the simulated hosts take back the guests the database says they
hold, in their recorded power states, so the servers stay usable (a real host's guests outlive its agent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.clouds import ApiClient, in_process_cloud, make_settings, wait_for_server

V = {"OpenStack-API-Version": "compute 2.37"}


def _cloud(data_dir: Path) -> Any:
    settings = make_settings(data_dir)
    settings.fake.spawn_delay_s = settings.fake.op_delay_s = 0.0
    settings.conductor.stop_timeout_s = 0.5
    return in_process_cloud(settings, 2)


async def _boot(api: ApiClient, name: str) -> str:
    image = (await api.get("/image/v2/images")).json()["images"][0]["id"]
    resp = await api.post("/compute/v2.1/servers", headers=V, json={"server": {
        "name": name, "imageRef": image, "flavorRef": "1", "networks": "none"}})
    assert resp.status_code == 202, resp.text
    sid = str(resp.json()["server"]["id"])
    await wait_for_server(api, sid, {"ACTIVE"})
    return sid


async def _act(api: ApiClient, sid: str, body: dict[str, Any]) -> None:
    resp = await api.post(f"/compute/v2.1/servers/{sid}/action", headers=V, json=body)
    assert resp.status_code == 202, resp.text


async def test_servers_survive_a_restart_of_the_all_in_one(data_dir: Path) -> None:
    async with _cloud(data_dir) as aio:
        running, stopped = await _boot(aio.api, "running"), await _boot(aio.api, "stopped")
        await _act(aio.api, stopped, {"os-stop": None})
        await wait_for_server(aio.api, stopped, {"SHUTOFF"})
        held = {sid: d.host for d in aio.drivers.values() for sid in d.guests}

    async with _cloud(data_dir) as aio:
        assert {sid: d.host for d in aio.drivers.values() for sid in d.guests} == held
        await _act(aio.api, running, {"os-stop": None})
        await wait_for_server(aio.api, running, {"SHUTOFF"})
        await _act(aio.api, stopped, {"os-start": None})
        s = await wait_for_server(aio.api, stopped, {"ACTIVE"})
        assert s["OS-EXT-STS:power_state"] == 1 and s.get("fault") is None, s
        resp = await aio.api.post(f"/compute/v2.1/servers/{running}/action", headers=V,
                                  json={"os-getConsoleOutput": {}})
        assert resp.status_code == 200 and "kept running" in resp.json()["output"], resp.text
