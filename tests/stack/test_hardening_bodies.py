"""Issue 14, bodies and odds and ends: a body over the limit is refused (413) before it is read, deep JSON
is a 400, an image ID is never reused, /metrics is for operators. Each test failed on the code before
issue 14."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tests.clouds import ApiClient


async def _call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
                ) -> tuple[int, int]:
    """Drive the ASGI app by hand: (the status, how many body chunks it pulled)."""
    pulled, status = 0, 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": headers, "client": ("192.0.2.9", 5000), "server": ("canopy", 80),
             "scheme": "http", "http_version": "1.1", "asgi": {"version": "3.0"}}
    await app(scope, receive, send)
    return status, pulled


async def test_a_50_mb_token_request_is_refused_before_a_byte_is_read(api: ApiClient) -> None:
    size = 50 * 1024 * 1024
    headers = [(b"content-type", b"application/json"), (b"content-length", str(size).encode())]
    status, pulled = await _call(api.app, "POST", "/identity/v3/auth/tokens", headers, [b"{" * 65536] * 4)
    assert status == 413
    assert pulled == 0, "the declared length alone decides"


async def test_a_chunked_body_is_cut_off_at_the_limit(api: ApiClient) -> None:
    chunks = [b" " * 65536] * 800  # 50 MiB if read to the end
    status, pulled = await _call(api.app, "POST", "/identity/v3/auth/tokens",
                                 [(b"content-type", b"application/json")], chunks)
    assert status == 413
    assert pulled <= 1024 * 1024 // 65536 + 1


async def test_a_json_body_nested_too_deep_is_a_400(api: ApiClient) -> None:
    deep = "[" * 200 + "]" * 200
    resp = await api.post("/compute/v2.1/servers", content=f'{{"server": {deep}}}'.encode(),
                          headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert "deeper" in resp.json()["badRequest"]["message"]


async def test_image_data_streams_past_the_json_limit(api: ApiClient) -> None:
    image = (await api.post("/image/v2/images", json={"name": "big", "disk_format": "raw",
                                                       "container_format": "bare"})).json()
    data = b"x" * (2 * 1024 * 1024)
    resp = await api.put(f"/image/v2/images/{image['id']}/file", content=data,
                         headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 204, resp.text
    assert (await api.get(f"/image/v2/images/{image['id']}")).json()["size"] == len(data)


async def test_a_deleted_images_id_is_never_given_to_another_image(api: ApiClient) -> None:
    image_id = str(uuid.uuid4())
    resp = await api.post("/image/v2/images", json={"id": image_id, "name": "public-one", "visibility": "public"})
    assert resp.status_code == 201, resp.text
    assert (await api.delete(f"/image/v2/images/{image_id}")).status_code == 204
    again = await api.post("/image/v2/images", json={"id": image_id, "name": "impostor"}, as_user="demo")
    assert again.status_code == 409, again.text
    assert image_id in orjson.loads(again.content)["message"]


async def test_metrics_need_an_admin_token_or_a_scrape_address(api: ApiClient) -> None:
    assert (await api.http.get("/metrics")).status_code == 401
    assert (await api.get("/metrics", as_user="demo")).status_code == 401
    assert (await api.get("/metrics")).status_code == 200
    api.app.state.cloud.settings.api.metrics_scrape_addresses = ["127.0.0.1"]  # httpx's ASGI client address
    assert (await api.http.get("/metrics")).status_code == 200
