"""Compute flavors and keypairs through the API, in Nova's shapes per microversion."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.clouds import ApiClient

FLAVORS = "/compute/v2.1/flavors"
KEYPAIRS = "/compute/v2.1/os-keypairs"


def mv(version: str) -> dict[str, str]:
    return {"OpenStack-API-Version": f"compute {version}"}


def ed25519_public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def md5_fingerprint(public_key: str) -> str:
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


async def test_flavor_list_and_detail_shapes_follow_the_microversion(api: ApiClient) -> None:
    old = (await api.get(FLAVORS, as_user="demo")).json()["flavors"]
    assert [f["name"] for f in old][:2] == ["m1.tiny", "m1.small"]
    assert set(old[0]) == {"id", "name", "links"}
    assert set((await api.get(FLAVORS, as_user="demo", headers=mv("2.55"))).json()["flavors"][0]) == {
        "id", "name", "links", "description"}

    detail = (await api.get(f"{FLAVORS}/detail", as_user="demo")).json()["flavors"][0]
    assert detail["ram"] == 512 and detail["vcpus"] == 1 and detail["disk"] == 1
    assert detail["swap"] == "" and detail["OS-FLV-EXT-DATA:ephemeral"] == 0
    assert detail["os-flavor-access:is_public"] is True and detail["OS-FLV-DISABLED:disabled"] is False
    assert detail["rxtx_factor"] == 1.0
    assert "description" not in detail and "extra_specs" not in detail

    new = (await api.get(f"{FLAVORS}/detail", as_user="demo", headers=mv("2.61"))).json()["flavors"][0]
    assert new["description"] is None and new["extra_specs"] == {}
    assert new["swap"] == ""
    latest = (await api.get(f"{FLAVORS}/1", as_user="demo", headers=mv("2.75"))).json()["flavor"]
    assert latest["swap"] == 0 and latest["extra_specs"] == {}


async def test_flavor_filters_and_pagination(api: ApiClient) -> None:
    big = (await api.get(FLAVORS, params={"minRam": "8192"})).json()["flavors"]
    assert {f["name"] for f in big} == {"m1.large", "m1.xlarge"}
    assert (await api.get(FLAVORS, params={"minDisk": "x"})).status_code == 400

    page = (await api.get(FLAVORS, params={"limit": "2", "sort_key": "memory_mb"})).json()
    assert [f["name"] for f in page["flavors"]] == ["m1.tiny", "m1.small"]
    next_href = page["flavors_links"][0]["href"]
    assert "marker=2" in next_href and "sort_key=memory_mb" in next_href
    rest = (await api.get(FLAVORS, params={"marker": "2", "sort_key": "memory_mb"})).json()
    assert [f["name"] for f in rest["flavors"]] == ["m1.medium", "m1.large", "m1.xlarge"]
    assert "flavors_links" not in rest
    assert (await api.get(FLAVORS, params={"marker": "nope"})).status_code == 400


async def test_admin_creates_describes_and_deletes_a_flavor(api: ApiClient) -> None:
    body = {"flavor": {"name": "c1.special", "ram": 1024, "vcpus": 2, "disk": 10, "swap": 256,
                       "os-flavor-access:is_public": False, "description": "for tests"}}
    resp = await api.post(FLAVORS, json=body, headers=mv("2.61"))
    assert resp.status_code == 200, resp.text
    flavor = resp.json()["flavor"]
    fid = flavor["id"]
    assert len(fid) == 36 and flavor["swap"] == 256 and flavor["description"] == "for tests"
    assert flavor["os-flavor-access:is_public"] is False and flavor["extra_specs"] == {}

    # Private: hidden from members, and from the admin's default listing unless is_public=None.
    assert (await api.get(f"{FLAVORS}/{fid}", as_user="demo")).status_code == 404
    assert fid not in {f["id"] for f in (await api.get(FLAVORS)).json()["flavors"]}
    assert fid in {f["id"] for f in (await api.get(FLAVORS, params={"is_public": "None"})).json()["flavors"]}

    assert (await api.get(f"{FLAVORS}/{fid}/os-flavor-access")).json() == {"flavor_access": []}
    assert (await api.get(f"{FLAVORS}/1/os-flavor-access")).status_code == 404

    specs = f"{FLAVORS}/{fid}/os-extra_specs"
    resp = await api.post(specs, json={"extra_specs": {"hw:cpu_policy": "dedicated", "quota:vif": 5}})
    assert resp.status_code == 200 and resp.json() == {"extra_specs": {"hw:cpu_policy": "dedicated", "quota:vif": "5"}}
    assert (await api.put(f"{specs}/quota:vif", json={"quota:vif": "7"})).json() == {"quota:vif": "7"}
    assert (await api.put(f"{specs}/quota:vif", json={"other": "7"})).status_code == 400
    assert (await api.get(f"{specs}/quota:vif")).json() == {"quota:vif": "7"}
    assert (await api.delete(f"{specs}/quota:vif")).status_code == 202
    missing = await api.get(f"{specs}/quota:vif")
    assert missing.status_code == 404
    assert (await api.get(specs)).json() == {"extra_specs": {"hw:cpu_policy": "dedicated"}}
    shown = (await api.get(f"{FLAVORS}/{fid}", headers=mv("2.61"))).json()["flavor"]
    assert shown["extra_specs"] == {"hw:cpu_policy": "dedicated"}

    updated = await api.put(f"{FLAVORS}/{fid}", json={"flavor": {"description": "changed"}}, headers=mv("2.55"))
    assert updated.status_code == 200 and updated.json()["flavor"]["description"] == "changed"

    assert (await api.delete(f"{FLAVORS}/{fid}")).status_code == 202
    gone = await api.get(f"{FLAVORS}/{fid}")
    assert gone.status_code == 404
    assert gone.json() == {"itemNotFound": {"code": 404, "message": f"Flavor {fid} could not be found."}}


async def test_flavor_writes_are_admin_only_and_validated(api: ApiClient) -> None:
    body = {"flavor": {"name": "x1", "ram": 512, "vcpus": 1, "disk": 1, "id": "x1"}}
    denied = await api.post(FLAVORS, json=body, as_user="demo")
    assert denied.status_code == 403 and "forbidden" in denied.json()
    assert (await api.delete(f"{FLAVORS}/1", as_user="demo")).status_code == 403
    assert (await api.post(f"{FLAVORS}/1/os-extra_specs", json={"extra_specs": {"a": "b"}},
                           as_user="demo")).status_code == 403

    assert (await api.post(FLAVORS, json=body)).status_code == 200
    dup_id = await api.post(FLAVORS, json={"flavor": {**body["flavor"], "name": "x2"}})
    assert dup_id.status_code == 409
    assert dup_id.json()["conflictingRequest"]["message"] == "Flavor with ID x1 already exists."
    dup_name = await api.post(FLAVORS, json={"flavor": {**body["flavor"], "id": "x3"}})
    assert dup_name.status_code == 409 and "name x1" in dup_name.json()["conflictingRequest"]["message"]

    for bad in ({"ram": 0}, {"ram": "lots"}, {"vcpus": True}, {"disk": -1}, {"color": "red"}, {"name": " pad"},
                {"description": "too early"}):
        resp = await api.post(FLAVORS, json={"flavor": {**body["flavor"], "id": "x9", "name": "x9", **bad}})
        assert resp.status_code == 400, bad
        assert "badRequest" in resp.json()
    assert (await api.post(FLAVORS, json={"flavor": {"name": "x9"}})).status_code == 400


async def test_keypair_generation_returns_a_usable_private_key(api: ApiClient) -> None:
    resp = await api.post(KEYPAIRS, json={"keypair": {"name": "gen"}}, as_user="demo", headers=mv("2.2"))
    assert resp.status_code == 201, resp.text
    kp = resp.json()["keypair"]
    assert kp["type"] == "ssh" and kp["public_key"].startswith("ssh-rsa ")
    private = serialization.load_pem_private_key(kp["private_key"].encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    derived = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert kp["public_key"].split()[1] == derived.decode().split()[1]
    assert kp["fingerprint"] == md5_fingerprint(kp["public_key"])

    shown = (await api.get(f"{KEYPAIRS}/gen", as_user="demo", headers=mv("2.2"))).json()["keypair"]
    assert "private_key" not in shown
    assert shown["deleted"] is False and shown["user_id"] == kp["user_id"]
    assert isinstance(shown["id"], int) and shown["created_at"].endswith("Z")


async def test_keypair_import_list_per_user_and_delete(api: ApiClient) -> None:
    public = ed25519_public_key()
    resp = await api.post(KEYPAIRS, json={"keypair": {"name": "mine", "public_key": public}}, as_user="demo")
    assert resp.status_code == 200  # 2.1 answers 200; 2.2+ 201
    assert resp.json()["keypair"]["fingerprint"] == md5_fingerprint(public)
    assert "type" not in resp.json()["keypair"]
    dup = await api.post(KEYPAIRS, json={"keypair": {"name": "mine", "public_key": public}}, as_user="demo")
    assert dup.status_code == 409
    assert dup.json()["conflictingRequest"]["message"] == "Key pair 'mine' already exists."
    for bad in ("not a key", "ssh-rsa !!!notbase64", "ssh-rsa " + base64.b64encode(b"junk").decode()):
        resp = await api.post(KEYPAIRS, json={"keypair": {"name": "bad", "public_key": bad}}, as_user="demo")
        assert resp.status_code == 400, bad
    assert (await api.post(KEYPAIRS, json={"keypair": {"name": "b@d", "public_key": public}},
                           as_user="demo")).status_code == 400

    assert (await api.post(KEYPAIRS, json={"keypair": {"name": "admins", "public_key": public}})).status_code == 200
    listed = (await api.get(KEYPAIRS, as_user="demo", headers=mv("2.2"))).json()["keypairs"]
    assert [k["keypair"]["name"] for k in listed] == ["mine"]
    assert listed[0]["keypair"]["type"] == "ssh"
    assert [k["keypair"]["name"] for k in (await api.get(KEYPAIRS)).json()["keypairs"]] == ["admins"]
    assert (await api.get(f"{KEYPAIRS}/admins", as_user="demo")).status_code == 404

    assert (await api.delete(f"{KEYPAIRS}/mine", as_user="demo", headers=mv("2.2"))).status_code == 204
    missing = await api.get(f"{KEYPAIRS}/mine", as_user="demo")
    assert missing.status_code == 404 and "itemNotFound" in missing.json()
    assert (await api.delete(f"{KEYPAIRS}/mine", as_user="demo")).status_code == 404


async def test_admin_reads_another_users_keypairs_and_pages(api: ApiClient) -> None:
    for name in ("a", "b", "c"):
        resp = await api.post(KEYPAIRS, json={"keypair": {"name": name, "public_key": ed25519_public_key()}},
                              as_user="demo", headers=mv("2.10"))
        assert resp.status_code == 201
    demo_id = resp.json()["keypair"]["user_id"]
    as_admin = await api.get(KEYPAIRS, params={"user_id": demo_id}, headers=mv("2.10"))
    assert [k["keypair"]["name"] for k in as_admin.json()["keypairs"]] == ["a", "b", "c"]
    assert (await api.get(KEYPAIRS, params={"user_id": "someone"}, as_user="demo",
                          headers=mv("2.10"))).status_code == 403

    page = (await api.get(KEYPAIRS, params={"limit": "2"}, as_user="demo", headers=mv("2.35"))).json()
    assert [k["keypair"]["name"] for k in page["keypairs"]] == ["a", "b"]
    assert "marker=b" in page["keypairs_links"][0]["href"]
    rest = (await api.get(KEYPAIRS, params={"marker": "b"}, as_user="demo", headers=mv("2.35"))).json()
    assert [k["keypair"]["name"] for k in rest["keypairs"]] == ["c"]
