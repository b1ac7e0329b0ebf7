"""Image v2, Glance's less used calls: members, deactivate/reactivate, both JSON-patch media types,
protected images, reserved properties, discovery, metadefs (a plain 404), and booting a shared image."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clouds import ApiClient, V, server_body, wait_for_server
from tests.stack.test_image_api import IMAGES, OCTETS, PATCH, _create, _error, _ids, _patch

PATCH_20 = {"Content-Type": "application/openstack-images-v2.0-json-patch"}


async def _project(api: ApiClient, name: str) -> str:
    projects = (await api.get(f"/identity/v3/projects?name={name}")).json()["projects"]
    return str(projects[0]["id"])


async def _shared(api: ApiClient) -> dict[str, Any]:
    image = await _create(api, name="to-share", visibility="shared")
    up = await api.put(f"{IMAGES}/{image['id']}/file", as_user="demo", content=b"x" * 1024, headers=OCTETS)
    assert up.status_code == 204, up.text
    return image


async def test_members_share_accept_reject_and_withdraw(api: ApiClient, other: str) -> None:
    image = await _shared(api)
    iid, theirs = image["id"], await _project(api, "other")
    assert iid not in await _ids(api, "other")
    _error(await api.get(f"{IMAGES}/{iid}", as_user="other"), 404)
    resp = await api.post(f"{IMAGES}/{iid}/members", as_user="demo", json={"member": theirs})
    assert resp.status_code == 200, resp.text
    member = resp.json()
    assert member["status"] == "pending" and member["member_id"] == theirs and member["image_id"] == iid
    assert member["schema"] == "/v2/schemas/member"
    assert "already associated" in _error(
        await api.post(f"{IMAGES}/{iid}/members", as_user="demo", json={"member": theirs}), 409)
    _error(await api.post(f"{IMAGES}/{iid}/members", as_user="demo", json={"member": 7}), 400)
    # Pending: the member can read it by ID, but its list shows it only when asked for pending ones.
    assert (await api.get(f"{IMAGES}/{iid}", as_user="other")).status_code == 200
    assert iid not in await _ids(api, "other")
    assert iid in await _ids(api, "other", "&member_status=pending")
    assert iid in await _ids(api, "other", "&visibility=shared&member_status=all")
    _error(await api.get(f"{IMAGES}?member_status=maybe", as_user="other"), 400)
    # Only the member answers; the owner cannot answer for it.
    _error(await api.put(f"{IMAGES}/{iid}/members/{theirs}", as_user="demo", json={"status": "accepted"}), 403)
    _error(await api.put(f"{IMAGES}/{iid}/members/{theirs}", as_user="other", json={"status": "yes"}), 400)
    resp = await api.put(f"{IMAGES}/{iid}/members/{theirs}", as_user="other", json={"status": "accepted"})
    assert resp.status_code == 200 and resp.json()["status"] == "accepted"
    assert iid in await _ids(api, "other")
    assert iid in await _ids(api, "other", "&visibility=shared")
    listed = (await api.get(f"{IMAGES}/{iid}/members", as_user="other")).json()
    assert [m["member_id"] for m in listed["members"]] == [theirs] and listed["schema"] == "/v2/schemas/members"
    shown = await api.get(f"{IMAGES}/{iid}/members/{theirs}", as_user="other")
    assert shown.json()["status"] == "accepted"
    # A member cannot change the image, nor withdraw itself; rejecting hides it from the list again.
    _error(await _patch(api, iid, [{"op": "replace", "path": "/name", "value": "mine"}], as_user="other"), 403)
    _error(await api.delete(f"{IMAGES}/{iid}/members/{theirs}", as_user="other"), 403)
    await api.put(f"{IMAGES}/{iid}/members/{theirs}", as_user="other", json={"status": "rejected"})
    assert iid not in await _ids(api, "other")
    assert (await api.delete(f"{IMAGES}/{iid}/members/{theirs}", as_user="demo")).status_code == 204
    _error(await api.get(f"{IMAGES}/{iid}", as_user="other"), 404)
    _error(await api.delete(f"{IMAGES}/{iid}/members/{theirs}", as_user="demo"), 404)


async def test_only_shared_images_have_members(api: ApiClient, other: str) -> None:
    image = await _create(api, name="private", visibility="private")
    theirs = await _project(api, "other")
    resp = await api.post(f"{IMAGES}/{image['id']}/members", as_user="demo", json={"member": theirs})
    assert "Only shared images have members" in _error(resp, 403)
    _error(await api.post(f"{IMAGES}/{image['id']}/members", as_user="other", json={"member": theirs}), 404)


async def test_deactivate_and_reactivate(api: ApiClient) -> None:
    image = await _shared(api)
    iid = image["id"]
    _error(await api.post(f"{IMAGES}/{iid}/actions/deactivate", as_user="demo"), 403)
    assert (await api.post(f"{IMAGES}/{iid}/actions/deactivate")).status_code == 204
    assert (await api.post(f"{IMAGES}/{iid}/actions/deactivate")).status_code == 204  # again: no change
    assert (await api.get(f"{IMAGES}/{iid}", as_user="demo")).json()["status"] == "deactivated"
    assert "deactivated" in _error(await api.get(f"{IMAGES}/{iid}/file", as_user="demo"), 403)
    assert (await api.get(f"{IMAGES}/{iid}/file")).content == b"x" * 1024  # an admin still can
    assert (await api.post(f"{IMAGES}/{iid}/actions/reactivate")).status_code == 204
    assert (await api.get(f"{IMAGES}/{iid}/file", as_user="demo")).status_code == 200
    queued = await _create(api, name="empty")
    assert "status 'queued'" in _error(await api.post(f"{IMAGES}/{queued['id']}/actions/deactivate"), 403)
    assert "status 'queued'" in _error(await api.post(f"{IMAGES}/{queued['id']}/actions/reactivate"), 403)


async def test_v20_json_patch_media_type(api: ApiClient) -> None:
    image = await _create(api, name="old", os_distro="cirros")
    ops = [{"replace": "/name", "value": "new"}, {"add": "/os_version", "value": "0.6"}, {"remove": "/os_distro"}]
    resp = await api.patch(f"{IMAGES}/{image['id']}", as_user="demo", json=ops, headers=PATCH_20)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "new" and body["os_version"] == "0.6" and "os_distro" not in body
    bad = [{"replace": "/name", "op": "replace", "value": "x"}]
    _error(await api.patch(f"{IMAGES}/{image['id']}", as_user="demo", json=bad, headers=PATCH_20), 400)
    _error(await api.patch(f"{IMAGES}/{image['id']}", as_user="demo", json=ops,
                           headers={"Content-Type": "application/json"}), 415)


async def test_protected_images_and_unprotect(api: ApiClient) -> None:
    image = await _create(api, name="keep", protected=True)
    assert "protected" in _error(await api.delete(f"{IMAGES}/{image['id']}", as_user="demo"), 403)
    resp = await _patch(api, image["id"], [{"op": "replace", "path": "/protected", "value": False}])
    assert resp.status_code == 200 and resp.json()["protected"] is False
    assert (await api.delete(f"{IMAGES}/{image['id']}", as_user="demo")).status_code == 204


@pytest.mark.parametrize("key", ["os_glance_import_task", "os_glance_failed_import", "os_glance_stores"])
async def test_reserved_os_glance_properties(api: ApiClient, key: str) -> None:
    before = await _ids(api, "demo")
    assert key in _error(await api.post(IMAGES, as_user="demo", json={"name": "r", key: "v"}), 403)
    assert await _ids(api, "demo") == before
    image = await _create(api, name="r")
    assert key in _error(await _patch(api, image["id"], [{"op": "add", "path": f"/{key}", "value": "v"}]), 403)


async def test_discovery_schemas_and_metadefs(api: ApiClient) -> None:
    methods = (await api.get("/image/v2/info/import", as_user="demo")).json()["import-methods"]
    assert methods["type"] == "array" and methods["value"] == []
    stores = (await api.get("/image/v2/info/stores", as_user="demo")).json()["stores"]
    assert [s["id"] for s in stores] == ["local"] and stores[0]["default"] is True
    member = (await api.get("/image/v2/schemas/member", as_user="demo")).json()
    assert member["name"] == "member" and member["properties"]["status"]["enum"] == ["pending", "accepted",
                                                                                      "rejected"]
    members = (await api.get("/image/v2/schemas/members", as_user="demo")).json()
    assert members["properties"]["members"]["items"]["name"] == "member"
    for path in ("/image/v2/metadefs/namespaces", "/image/v2/schemas/metadefs/namespace"):
        assert "metadefs" in _error(await api.get(path, as_user="demo"), 404)


async def test_boot_from_an_image_shared_with_the_project(stack: Any) -> None:
    api = stack.api
    resp = await api.post(IMAGES, as_user="admin", json={"name": "gold", "visibility": "shared",
                                                         "disk_format": "qcow2", "container_format": "bare"})
    iid = resp.json()["id"]
    tiny = await api.get(f"{IMAGES}/{server_body()['server']['imageRef']}/file")
    assert (await api.put(f"{IMAGES}/{iid}/file", content=tiny.content, headers=OCTETS)).status_code == 204
    body = server_body(name="from-shared", imageRef=iid)
    refused = await api.post("/compute/v2.1/servers", json=body, headers=V, as_user="demo")
    assert refused.status_code == 400 and iid in refused.text
    demo = (await api.get("/identity/v3/projects?name=demo")).json()["projects"][0]["id"]
    assert (await api.post(f"{IMAGES}/{iid}/members", json={"member": demo})).status_code == 200
    await api.put(f"{IMAGES}/{iid}/members/{demo}", as_user="demo", json={"status": "accepted"})
    resp = await api.post("/compute/v2.1/servers", json=body, headers=V, as_user="demo")
    assert resp.status_code == 202, resp.text
    await wait_for_server(api, resp.json()["server"]["id"], {"ACTIVE"}, as_user="demo")


@pytest.mark.parametrize("method,path,body,headers,status", [
    ("GET", "/images/00000000-0000-0000-0000-000000000000", None, {}, 404),
    ("GET", "/images?sort_key=colour", None, {}, 400),
    ("GET", "/images?member_status=maybe", None, {}, 400),
    ("GET", "/images?visibility=everyone", None, {}, 400),
    ("POST", "/images", ["x"], {}, 400),
    ("POST", "/images", {"visibility": "public"}, {}, 403),
    ("POST", "/images", {"os_glance_x": "1"}, {}, 403),
    ("PATCH", "/images/{tiny}", [{"op": "replace", "path": "/name", "value": "x"}], PATCH, 403),
    ("PATCH", "/images/{tiny}", [{"op": "replace", "path": "/name", "value": "x"}], PATCH_20, 400),
    ("PATCH", "/images/{tiny}", [], {"Content-Type": "application/json"}, 415),
    ("DELETE", "/images/{tiny}", None, {}, 403),
    ("PUT", "/images/{tiny}/file", b"x", OCTETS, 403),
    ("POST", "/images/{tiny}/members", {"member": "p"}, {}, 403),
    ("GET", "/images/{tiny}/members/p", None, {}, 403),
    ("POST", "/images/{tiny}/actions/deactivate", None, {}, 403),
    ("GET", "/metadefs/namespaces", None, {}, 404),
    ("GET", "/no-such-thing", None, {}, 404),
])
async def test_error_paths_answer_glance_errors(api: ApiClient, method: str, path: str, body: Any,
                                                headers: dict[str, str], status: int) -> None:
    from canopy.seed import TINY_IMAGE_ID

    kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    resp = await api.request(method, "/image/v2" + path.format(tiny=TINY_IMAGE_ID), as_user="demo",
                             headers=headers, **kw)
    assert _error(resp, status)
