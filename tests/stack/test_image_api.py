"""Image v2: versions, records, JSON-patch updates, data upload and download, and who sees what."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from canopy.runtime import Cloud
from canopy.seed import TINY_IMAGE_ID
from tests.clouds import ApiClient

IMAGES = "/image/v2/images"
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
OCTETS = {"Content-Type": "application/octet-stream"}


def _error(resp: httpx.Response, status: int) -> str:
    """The message of an image-shaped error with `status`."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"code", "title", "message"} and body["code"] == f"{status} {body['title']}"
    return str(body["message"])


async def _create(api: ApiClient, as_user: str = "demo", **body: Any) -> dict[str, Any]:
    body.setdefault("disk_format", "raw")
    body.setdefault("container_format", "bare")
    resp = await api.post(IMAGES, as_user=as_user, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def _patch(api: ApiClient, image_id: str, ops: list[dict[str, Any]], as_user: str = "demo") -> httpx.Response:
    return await api.patch(f"{IMAGES}/{image_id}", as_user=as_user, json=ops, headers=PATCH)


async def _ids(api: ApiClient, as_user: str, query: str = "") -> list[str]:
    resp = await api.get(f"{IMAGES}?limit=1000{query}", as_user=as_user)
    assert resp.status_code == 200, resp.text
    return [i["id"] for i in resp.json()["images"]]


async def test_versions_are_public(api: ApiClient) -> None:
    root = await api.http.get("/image/")
    assert root.status_code == 300
    versions = root.json()["versions"]
    assert versions[0]["id"] == "v2.16" and versions[0]["status"] == "CURRENT"
    assert versions[0]["links"][0]["href"].endswith("/image/v2/")
    assert all(v["status"] == "SUPPORTED" for v in versions[1:])
    listed = await api.http.get("/image/versions")
    assert listed.status_code == 200
    assert listed.json() == root.json()


async def test_schemas(api: ApiClient) -> None:
    image = (await api.get("/image/v2/schemas/image")).json()
    assert image["name"] == "image"
    assert "disk_format" in image["properties"]
    images = (await api.get("/image/v2/schemas/images")).json()
    assert images["name"] == "images"


async def test_create_show_list_delete(api: ApiClient) -> None:
    image = await _create(api, name="cirros", min_ram=64, tags=["a", "b"], os_distro="cirros")
    assert image["status"] == "queued"
    assert image["visibility"] == "shared"
    assert image["os_distro"] == "cirros"
    assert image["size"] is None and image["checksum"] is None and image["virtual_size"] is None
    assert image["self"] == f"/v2/images/{image['id']}"
    assert image["file"] == f"/v2/images/{image['id']}/file"
    assert image["schema"] == "/v2/schemas/image"
    assert image["created_at"].endswith("Z")
    assert image["min_ram"] == 64 and image["tags"] == ["a", "b"]
    shown = (await api.get(f"{IMAGES}/{image['id']}", as_user="demo")).json()
    assert shown == image
    assert image["id"] in await _ids(api, "demo")
    assert (await api.delete(f"{IMAGES}/{image['id']}", as_user="demo")).status_code == 204
    assert image["id"] in _error(await api.get(f"{IMAGES}/{image['id']}", as_user="demo"), 404)
    _error(await api.delete(f"{IMAGES}/{image['id']}", as_user="demo"), 404)


async def test_create_with_id_and_duplicate(api: ApiClient) -> None:
    wanted = "0d3c8f7e-5b8a-4a53-9f59-3a8ac1f0e2aa"
    image = await _create(api, id=wanted, name="fixed")
    assert image["id"] == wanted
    _error(await api.post(IMAGES, as_user="demo", json={"id": wanted}), 409)


async def test_bad_bodies(api: ApiClient) -> None:
    assert "disk_format" in _error(await api.post(IMAGES, as_user="demo", json={"disk_format": "floppy"}), 400)
    assert "min_ram" in _error(await api.post(IMAGES, as_user="demo", json={"min_ram": "lots"}), 400)
    assert "protected" in _error(await api.post(IMAGES, as_user="demo", json={"protected": "yes"}), 400)
    assert "os_distro" in _error(await api.post(IMAGES, as_user="demo", json={"os_distro": 7}), 400)
    assert "id" in _error(await api.post(IMAGES, as_user="demo", json={"id": "not-a-uuid"}), 400)
    _error(await api.post(IMAGES, as_user="demo", json=["not", "an", "object"]), 400)
    assert "status" in _error(await api.post(IMAGES, as_user="demo", json={"status": "active"}), 403)
    _error(await api.post(IMAGES, as_user="demo", json={"visibility": "public"}), 403)


async def test_upload_then_download(api: ApiClient, cloud: Cloud) -> None:
    image = await _create(api, name="blob")
    empty = await api.get(f"{IMAGES}/{image['id']}/file", as_user="demo")
    assert empty.status_code == 204
    data = bytes(range(256)) * 4099 + b"tail"
    up = await api.put(f"{IMAGES}/{image['id']}/file", as_user="demo", content=data, headers=OCTETS)
    assert up.status_code == 204, up.text
    shown = (await api.get(f"{IMAGES}/{image['id']}", as_user="demo")).json()
    assert shown["status"] == "active"
    assert shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    down = await api.get(f"{IMAGES}/{image['id']}/file", as_user="demo")
    assert down.status_code == 200
    assert down.content == data
    assert down.headers["content-md5"] == hashlib.md5(data).hexdigest()
    assert down.headers["content-type"] == "application/octet-stream"
    assert (cloud.image_dir / image["id"]).read_bytes() == data
    assert not [p for p in cloud.image_dir.iterdir() if p.name.endswith(".part")]

    again = await api.put(f"{IMAGES}/{image['id']}/file", as_user="demo", content=b"x", headers=OCTETS)
    assert "active" in _error(again, 409)
    _error(await api.patch(f"{IMAGES}/{image['id']}", as_user="demo",
                           json=[{"op": "replace", "path": "/disk_format", "value": "qcow2"}], headers=PATCH), 403)


async def test_upload_needs_formats_and_octets(api: ApiClient) -> None:
    resp = await api.post(IMAGES, as_user="demo", json={"name": "bare"})
    image_id = resp.json()["id"]
    assert "disk_format" in _error(
        await api.put(f"{IMAGES}/{image_id}/file", as_user="demo", content=b"x", headers=OCTETS), 400)
    image = await _create(api, name="typed")
    _error(await api.put(f"{IMAGES}/{image['id']}/file", as_user="demo", content=b"x",
                         headers={"Content-Type": "text/plain"}), 415)
    assert (await api.get(f"{IMAGES}/{image['id']}", as_user="demo")).json()["status"] == "queued"


async def test_delete_removes_the_data(api: ApiClient, cloud: Cloud) -> None:
    image = await _create(api, name="doomed")
    await api.put(f"{IMAGES}/{image['id']}/file", as_user="demo", content=b"bytes" * 1000, headers=OCTETS)
    path = cloud.image_dir / image["id"]
    assert path.is_file()
    assert (await api.delete(f"{IMAGES}/{image['id']}", as_user="demo")).status_code == 204
    assert not path.exists()


async def test_protected_image_cannot_be_deleted(api: ApiClient) -> None:
    image = await _create(api, name="keep", protected=True)
    assert "protected" in _error(await api.delete(f"{IMAGES}/{image['id']}", as_user="demo"), 403)
    resp = await _patch(api, image["id"], [{"op": "replace", "path": "/protected", "value": False}])
    assert resp.status_code == 200, resp.text
    assert (await api.delete(f"{IMAGES}/{image['id']}", as_user="demo")).status_code == 204


async def test_json_patch(api: ApiClient) -> None:
    image = await _create(api, name="before", os_distro="ubuntu", os_version="22.04")
    iid = image["id"]
    resp = await _patch(api, iid, [
        {"op": "replace", "path": "/name", "value": "after"},
        {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
        {"op": "replace", "path": "/os_version", "value": "24.04"},
        {"op": "remove", "path": "/os_distro"},
        {"op": "replace", "path": "/tags", "value": ["x", "x", "y"]},
        {"op": "replace", "path": "/min_disk", "value": 2},
    ])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "after"
    assert body["hw_disk_bus"] == "virtio" and body["os_version"] == "24.04"
    assert "os_distro" not in body
    assert body["tags"] == ["x", "y"] and body["min_disk"] == 2
    assert (await api.get(f"{IMAGES}/{iid}", as_user="demo")).json() == body

    _error(await _patch(api, iid, [{"op": "replace", "path": "/missing", "value": "v"}]), 409)
    _error(await _patch(api, iid, [{"op": "remove", "path": "/missing"}]), 409)
    assert "status" in _error(await _patch(api, iid, [{"op": "replace", "path": "/status", "value": "active"}]),
                              403)
    assert "min_ram" in _error(await _patch(api, iid, [{"op": "replace", "path": "/min_ram", "value": -1}]), 400)
    _error(await _patch(api, iid, [{"op": "jump", "path": "/name"}]), 400)
    _error(await _patch(api, iid, {"op": "replace"}), 400)  # type: ignore[arg-type]
    plain_json = {"Content-Type": "application/json"}
    _error(await api.patch(f"{IMAGES}/{iid}", as_user="demo", json=[], headers=plain_json), 415)
    _error(await _patch(api, iid, [{"op": "replace", "path": "/visibility", "value": "public"}]), 403)


async def test_tags(api: ApiClient) -> None:
    image = await _create(api, name="tagged")
    assert (await api.put(f"{IMAGES}/{image['id']}/tags/gold", as_user="demo")).status_code == 204
    assert (await api.put(f"{IMAGES}/{image['id']}/tags/gold", as_user="demo")).status_code == 204
    assert (await api.get(f"{IMAGES}/{image['id']}", as_user="demo")).json()["tags"] == ["gold"]
    assert image["id"] in await _ids(api, "demo", "&tag=gold")
    assert (await api.delete(f"{IMAGES}/{image['id']}/tags/gold", as_user="demo")).status_code == 204
    _error(await api.delete(f"{IMAGES}/{image['id']}/tags/gold", as_user="demo"), 404)


async def test_visibility_across_projects(api: ApiClient, other: str) -> None:
    private = await _create(api, name="private", visibility="private")
    shared = await _create(api, name="shared")
    community = await _create(api, name="community", visibility="community")
    public = await _create(api, as_user="admin", name="public", visibility="public")

    seen = await _ids(api, other)
    assert public["id"] in seen and TINY_IMAGE_ID in seen
    assert private["id"] not in seen and shared["id"] not in seen and community["id"] not in seen
    assert await _ids(api, other, "&visibility=community") == [community["id"]]
    assert community["id"] in await _ids(api, other, "&visibility=all")
    for image in (private, shared):
        _error(await api.get(f"{IMAGES}/{image['id']}", as_user=other), 404)
        _error(await api.get(f"{IMAGES}/{image['id']}/file", as_user=other), 404)
        _error(await _patch(api, image["id"], [{"op": "add", "path": "/k", "value": "v"}], as_user=other), 404)
        _error(await api.delete(f"{IMAGES}/{image['id']}", as_user=other), 404)
    assert (await api.get(f"{IMAGES}/{community['id']}", as_user=other)).status_code == 200
    for image in (community, public):
        _error(await _patch(api, image["id"], [{"op": "add", "path": "/k", "value": "v"}], as_user=other), 403)
        _error(await api.delete(f"{IMAGES}/{image['id']}", as_user=other), 403)
        _error(await api.put(f"{IMAGES}/{image['id']}/file", as_user=other, content=b"x", headers=OCTETS), 403)

    mine = await _ids(api, "demo")
    assert {private["id"], shared["id"], community["id"], public["id"]} <= set(mine)
    everything = await _ids(api, "admin")
    assert {private["id"], shared["id"], community["id"], public["id"]} <= set(everything)
    assert await _ids(api, "demo", "&visibility=private") == [private["id"]]
    assert await _ids(api, other, "&visibility=private") == []


async def test_list_filters_sorting_and_pages(api: ApiClient) -> None:
    made = [await _create(api, name=f"img-{n}", min_disk=n) for n in range(5)]
    newest_first = await _ids(api, "demo", "&owner=" + made[0]["owner"])
    assert newest_first == [m["id"] for m in reversed(made)]
    by_name = await _ids(api, "demo", "&sort_key=name&sort_dir=asc&owner=" + made[0]["owner"])
    assert by_name == [m["id"] for m in made]
    assert await _ids(api, "demo", "&sort=min_disk:desc&status=queued") == [m["id"] for m in reversed(made)]
    assert await _ids(api, "demo", "&name=img-3") == [made[3]["id"]]
    assert await _ids(api, "demo", "&status=active") == [TINY_IMAGE_ID]

    pages: list[str] = []
    url = f"{IMAGES}?limit=2&status=queued"
    while url:
        body = (await api.get(url, as_user="demo")).json()
        assert len(body["images"]) <= 2
        pages.extend(i["id"] for i in body["images"])
        url = "/image" + body["next"] if "next" in body else ""
    assert pages == [m["id"] for m in reversed(made)]

    _error(await api.get(f"{IMAGES}?sort_key=colour", as_user="demo"), 400)
    _error(await api.get(f"{IMAGES}?sort_dir=sideways", as_user="demo"), 400)
    _error(await api.get(f"{IMAGES}?status=bogus", as_user="demo"), 400)
    _error(await api.get(f"{IMAGES}?visibility=bogus", as_user="demo"), 400)
    _error(await api.get(f"{IMAGES}?marker=00000000-0000-0000-0000-000000000000", as_user="demo"), 400)


async def test_failed_upload_leaves_the_image_queued(api: ApiClient, cloud: Cloud) -> None:
    image = await _create(api, name="interrupted")

    async def body() -> Any:
        yield b"first chunk"
        raise ConnectionResetError("client went away")

    # The app sees the body stream fail part-way (the api logs it and answers 500).
    failed = await api.put(f"{IMAGES}/{image['id']}/file", as_user="demo", content=body(), headers=OCTETS)
    assert failed.status_code == 500
    assert (await api.get(f"{IMAGES}/{image['id']}", as_user="demo")).json()["status"] == "queued"
    assert not [p for p in cloud.image_dir.iterdir() if image["id"] in p.name]
    retry = await api.put(f"{IMAGES}/{image['id']}/file", as_user="demo", content=b"whole", headers=OCTETS)
    assert retry.status_code == 204
