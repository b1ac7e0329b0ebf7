"""Issue 16, item 8's admin and proxy calls: flavor is_public as a string, Nova's service binary names,
os-quota-class-sets, the images proxy, os-instance_usage_audit_log. Each failed before the change
(400 on the string, no service found for nova-compute, 404 on the routes)."""

from __future__ import annotations

import pytest

from canopy.runtime import Cloud
from canopy.seed import TINY_IMAGE_ID
from tests.clouds import ApiClient
from tests.stack.test_compute_admin_apis import SERVICES, add_host, frozen, host_row, mv

FLAVORS = "/compute/v2.1/flavors"


@pytest.mark.parametrize("given,public", [("True", True), ("False", False), ("false", False), ("1", True),
                                          ("off", False), (True, True)])
async def test_flavor_is_public_may_be_a_string(api: ApiClient, given: object, public: bool) -> None:
    body = {"flavor": {"name": "s1", "ram": 512, "vcpus": 1, "disk": 1, "id": "s1",
                       "os-flavor-access:is_public": given}}
    resp = await api.post(FLAVORS, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["flavor"]["os-flavor-access:is_public"] is public


async def test_flavor_is_public_rejects_other_strings(api: ApiClient) -> None:
    body = {"flavor": {"name": "s1", "ram": 512, "vcpus": 1, "disk": 1, "os-flavor-access:is_public": "maybe"}}
    resp = await api.post(FLAVORS, json=body)
    assert resp.status_code == 400 and "is_public" in resp.json()["badRequest"]["message"]


async def test_nova_binary_names_filter_and_update_services(api: ApiClient, cloud: Cloud) -> None:
    frozen(cloud)
    ids = add_host(cloud, "cmp-1")
    add_host(cloud, "ctl-1", binary="canopy-conductor")
    found = (await api.get(SERVICES, params={"host": "cmp-1", "binary": "nova-compute"},
                           headers=mv("2.53"))).json()["services"]
    assert [s["id"] for s in found] == [ids["service_uuid"]]
    conductors = (await api.get(SERVICES, params={"binary": "nova-conductor"})).json()["services"]
    assert [s["host"] for s in conductors] == ["ctl-1"]
    resp = await api.put(f"{SERVICES}/disable", json={"host": "cmp-1", "binary": "nova-compute"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["service"] == {"host": "cmp-1", "binary": "nova-compute", "status": "disabled"}
    assert host_row(cloud, "cmp-1")["enabled"] is False
    resp = await api.put(f"{SERVICES}/enable", json={"host": "cmp-1", "binary": "nova-compute"})
    assert resp.status_code == 200 and host_row(cloud, "cmp-1")["enabled"] is True
    refused = await api.put(f"{SERVICES}/disable", json={"host": "ctl-1", "binary": "nova-conductor"})
    assert refused.status_code == 400 and "nova-conductor" in refused.json()["badRequest"]["message"]


async def test_quota_class_defaults_are_shown_updated_and_given_to_new_projects(api: ApiClient) -> None:
    url = "/compute/v2.1/os-quota-class-sets/default"
    shown = (await api.get(url)).json()["quota_class_set"]
    assert shown["id"] == "default" and shown["instances"] == 100 and shown["key_pairs"] == 100
    assert (await api.get(url, as_user="demo")).status_code == 403
    resp = await api.put(url, json={"quota_class_set": {"instances": 7, "cores": "20"}})
    assert resp.status_code == 200, resp.text
    body = resp.json()["quota_class_set"]
    assert "id" not in body and (body["instances"], body["cores"]) == (7, 20)
    demo = (await api.get("/identity/v3/projects?name=demo")).json()["projects"][0]["id"]
    defaults = (await api.get(f"/compute/v2.1/os-quota-sets/{demo}/defaults")).json()["quota_set"]
    assert (defaults["instances"], defaults["cores"]) == (7, 20)
    limits = (await api.get("/compute/v2.1/limits", as_user="demo")).json()["limits"]["absolute"]
    assert limits["maxTotalInstances"] == 7  # demo has no limits of its own: the class's apply
    for bad in ({"instances": -2}, {"instances": "many"}, {"colour": 1}, {"force": True}):
        resp = await api.put(url, json={"quota_class_set": bad})
        assert resp.status_code == 400 and "badRequest" in resp.json(), bad


async def test_images_proxy_lists_shows_and_deletes_until_2_36(api: ApiClient) -> None:
    images = (await api.get("/compute/v2.1/images", as_user="demo")).json()["images"]
    assert TINY_IMAGE_ID in [i["id"] for i in images]
    detail = (await api.get("/compute/v2.1/images/detail?name=canopy-tiny", as_user="demo")).json()["images"]
    assert [i["id"] for i in detail] == [TINY_IMAGE_ID]
    image = (await api.get(f"/compute/v2.1/images/{TINY_IMAGE_ID}", as_user="demo")).json()["image"]
    assert image["status"] == "ACTIVE" and image["progress"] == 100 and "minDisk" in image
    assert (await api.get(f"/compute/v2.1/images/{TINY_IMAGE_ID}", as_user="demo",
                          headers=mv("2.36"))).status_code == 404
    missing = await api.get("/compute/v2.1/images/00000000-0000-0000-0000-000000000000", as_user="demo")
    assert missing.status_code == 404 and "itemNotFound" in missing.json()
    assert (await api.delete(f"/compute/v2.1/images/{TINY_IMAGE_ID}", as_user="demo")).status_code == 403
    made = await api.post("/image/v2/images", json={"name": "mine", "disk_format": "raw",
                                                    "container_format": "bare"}, as_user="demo")
    assert made.status_code == 201, made.text
    mine = made.json()["id"]
    assert (await api.get(f"/compute/v2.1/images/{mine}", as_user="demo")).json()["image"]["status"] == "SAVING"
    assert (await api.delete(f"/compute/v2.1/images/{mine}", as_user="demo")).status_code == 204
    assert (await api.get(f"/image/v2/images/{mine}", as_user="demo")).status_code == 404


async def test_usage_audit_log_reports_every_compute_host_not_run(api: ApiClient, cloud: Cloud) -> None:
    frozen(cloud)  # 2026-03-01 12:00
    add_host(cloud, "cmp-1")
    add_host(cloud, "cmp-2")
    body = (await api.get("/compute/v2.1/os-instance_usage_audit_log")).json()["instance_usage_audit_logs"]
    assert body["num_hosts"] == 2 and body["hosts_not_run"] == ["cmp-1", "cmp-2"]
    assert body["overall_status"] == "0 of 2 hosts done. 0 errors."
    assert (body["period_beginning"], body["period_ending"]) == ("2026-02-01 00:00:00", "2026-03-01 00:00:00")
    one = (await api.get("/compute/v2.1/os-instance_usage_audit_log/2026-01-15 10:00:00")).json()
    assert one["instance_usage_audit_log"]["period_beginning"] == "2025-12-01 00:00:00"
    bad = await api.get("/compute/v2.1/os-instance_usage_audit_log/yesterday")
    assert bad.status_code == 400 and "Invalid timestamp" in bad.json()["badRequest"]["message"]
    assert (await api.get("/compute/v2.1/os-instance_usage_audit_log", as_user="demo")).status_code == 403
