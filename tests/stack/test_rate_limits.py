"""Per-project and per-source rate limits on the api: one project's burst gets 429 with Retry-After in
the service's error shape, while another project's requests still pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from canopy.clock import FakeClock
from canopy.config import RateLimit
from canopy.runtime import Cloud
from tests.clouds import ApiClient, make_settings


@pytest.fixture
async def limited(data_dir: Path) -> AsyncIterator[tuple[ApiClient, FakeClock]]:
    """An api whose projects may make 3 writes (then 1 a second) and whose clock stands still."""
    from canopy.api.app import build_app
    from canopy.rpc.local import LocalTransport
    from canopy.runtime import open_databases

    settings = make_settings(data_dir)
    settings.api.rate_limits.project["write"] = RateLimit(rate=1, burst=3)
    dbs = open_databases(settings)
    bus = LocalTransport()
    await bus.start()
    clock = FakeClock()
    client = ApiClient(build_app(Cloud(settings=settings, dbs=dbs, bus=bus, clock=clock)))
    try:
        yield client, clock
    finally:
        await client.http.aclose()
        await bus.close()
        dbs.dispose()


async def test_one_projects_burst_is_refused_while_another_passes(limited: tuple[ApiClient, FakeClock]) -> None:
    api, clock = limited
    body = {"network": {"name": "n"}}
    codes = [(await api.post("/network/v2.0/networks", as_user="demo", json=body)).status_code for _ in range(3)]
    assert codes == [201, 201, 201]
    refused = await api.post("/network/v2.0/networks", as_user="demo", json=body)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["NeutronError"]["type"] == "OverQuota"
    assert "Rate limit" in refused.json()["NeutronError"]["message"]
    other = await api.post("/network/v2.0/networks", as_user="admin", json=body)
    assert other.status_code == 201  # the admin project's bucket is its own
    reads = await api.get("/network/v2.0/networks", as_user="demo")
    assert reads.status_code == 200  # reads are another route class
    compute = await api.post("/compute/v2.1/os-keypairs", as_user="demo", json={"keypair": {"name": "k"}})
    assert compute.status_code == 429
    assert compute.json()["overLimit"]["code"] == 429
    clock.advance(1.0)
    again = await api.post("/network/v2.0/networks", as_user="demo", json=body)
    assert again.status_code == 201


async def test_source_limit_applies_before_authentication(data_dir: Path) -> None:
    from canopy.api.app import build_app
    from canopy.rpc.local import LocalTransport
    from canopy.runtime import open_databases

    settings = make_settings(data_dir)
    settings.api.rate_limits.source["auth"] = RateLimit(rate=1, burst=2)
    dbs = open_databases(settings)
    bus = LocalTransport()
    await bus.start()
    api = ApiClient(build_app(Cloud(settings=settings, dbs=dbs, bus=bus, clock=FakeClock())))
    try:
        bad = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "nobody", "domain": {"id": "default"}, "password": "x"}}}}}
        codes = [(await api.http.post("/identity/v3/auth/tokens", json=bad)).status_code for _ in range(3)]
        assert codes == [401, 401, 429]
    finally:
        await api.http.aclose()
        await bus.close()
        dbs.dispose()
