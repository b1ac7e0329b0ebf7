"""Every compute error path answers in Nova's exact shape: {kind: {"code": status, "message": text}} with
the kind Nova names for the status, one key at the top, an integer code equal to the HTTP status and a
message that names the cause (issue 16, item 9). The table walks the error paths of the compute routes,
old and new (the new routes' cases failed before their change: their 404 came from the missing route)."""

from __future__ import annotations

from typing import Any

import pytest

from canopy.api.errors import COMPUTE_KINDS
from tests.clouds import V, boot_active

UNKNOWN = "00000000-0000-0000-0000-000000000000"
S = "/compute/v2.1/servers"

# (label, method, path, json body or raw bytes, user, headers, status, needle in the message)
CASES: list[tuple[str, str, str, Any, str, dict[str, str], int, str]] = [
    ("no token", "GET", S, None, "", {}, 401, "authentication"),
    ("unknown route", "GET", "/compute/v2.1/os-nothing", None, "demo", V, 404, ""),
    ("wrong method", "PATCH", S, {}, "demo", V, 405, ""),
    ("microversion too new", "GET", S, None, "demo", {"OpenStack-API-Version": "compute 2.200"}, 406, "2.200"),
    ("malformed json", "POST", S, b"{nope", "demo", V, 400, "Malformed"),
    ("unknown server", "GET", f"{S}/{UNKNOWN}", None, "demo", V, 404, UNKNOWN),
    ("unknown action", "POST", f"{S}/{{sid}}/action", {"fly": None}, "demo", V, 400, "fly"),
    ("two actions", "POST", f"{S}/{{sid}}/action", {"os-stop": None, "os-start": None}, "demo", V, 400, "one"),
    ("start an active server", "POST", f"{S}/{{sid}}/action", {"os-start": None}, "demo", V, 409, "vm_state"),
    ("admin-only action", "POST", f"{S}/{{sid}}/action", {"shelveOffload": None}, "demo", V, 403, "Policy"),
    ("bad lock reason", "POST", f"{S}/{{sid}}/action", {"lock": {"locked_reason": 5}}, "demo", V, 400,
     "locked_reason"),
    ("bad backup", "POST", f"{S}/{{sid}}/action", {"createBackup": {"name": "b"}}, "demo", V, 400, "backup_type"),
    ("unshelve active", "POST", f"{S}/{{sid}}/action", {"unshelve": None}, "demo", V, 409, "unshelve"),
    ("bad access ip", "PUT", f"{S}/{{sid}}", {"server": {"accessIPv4": "x"}}, "demo", V, 400, "accessIPv4"),
    ("missing tag", "GET", f"{S}/{{sid}}/tags/none", None, "demo", V, 404, "none"),
    ("tag too long", "PUT", f"{S}/{{sid}}/tags/{'x' * 61}", None, "demo", V, 400, "tag"),
    ("tags below 2.26", "GET", f"{S}/{{sid}}/tags", None, "demo", {"OpenStack-API-Version": "compute 2.25"},
     404, ""),
    ("password of unknown server", "GET", f"{S}/{UNKNOWN}/os-server-password", None, "demo", V, 404, UNKNOWN),
    ("unknown flavor", "GET", "/compute/v2.1/flavors/nope", None, "demo", V, 404, "nope"),
    ("flavor write by a member", "POST", "/compute/v2.1/flavors", {"flavor": {}}, "demo", V, 403, "Policy"),
    ("quota class by a member", "GET", "/compute/v2.1/os-quota-class-sets/default", None, "demo", V, 403, ""),
    ("bad quota class value", "PUT", "/compute/v2.1/os-quota-class-sets/default",
     {"quota_class_set": {"cores": "x"}}, "admin", V, 400, "cores"),
    ("unknown image via proxy", "GET", f"/compute/v2.1/images/{UNKNOWN}", None, "demo",
     {"OpenStack-API-Version": "compute 2.1"}, 404, "Image"),
    ("audit log timestamp", "GET", "/compute/v2.1/os-instance_usage_audit_log/soon", None, "admin", V, 400,
     "timestamp"),
    ("unknown keypair", "GET", "/compute/v2.1/os-keypairs/nope", None, "demo", V, 404, "nope"),
    ("service of unknown host", "PUT", "/compute/v2.1/os-services/disable",
     {"host": "nowhere", "binary": "nova-compute"}, "admin", {"OpenStack-API-Version": "compute 2.1"}, 404,
     "nowhere"),
    ("unknown image", "POST", S, {"server": {"name": "q", "flavorRef": "1", "imageRef": UNKNOWN,
                                              "networks": "auto", "min_count": 1000}}, "demo", V, 400, "Image"),
]


def check_shape(resp: Any, status: int, needle: str) -> None:
    """Nova's error body: exactly one key, the kind of the status, {"code": status, "message": str}."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert list(body) == [COMPUTE_KINDS[status]], body
    inner = body[COMPUTE_KINDS[status]]
    assert set(inner) == {"code", "message"} and inner["code"] == status
    assert isinstance(inner["message"], str) and inner["message"]
    assert needle in inner["message"], inner["message"]


async def test_every_compute_error_path_answers_in_novas_shape(stack: Any) -> None:
    sid, _ = await boot_active(stack)
    for label, method, path, body, user, headers, status, needle in CASES:
        url = path.replace("{sid}", sid)
        kwargs: dict[str, Any] = {"headers": headers}
        if isinstance(body, bytes):
            kwargs.update(content=body, headers={**headers, "Content-Type": "application/json"})
        elif body is not None:
            kwargs["json"] = body
        if user:
            resp = await stack.api.request(method, url, as_user=user, **kwargs)
        else:
            resp = await stack.api.http.request(method, url, **kwargs)
        try:
            check_shape(resp, status, needle)
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from None


@pytest.mark.parametrize("status,kind", [(400, "badRequest"), (403, "forbidden"), (404, "itemNotFound"),
                                         (409, "conflictingRequest"), (413, "overLimit"), (500, "computeFault")])
def test_nova_names_each_status(status: int, kind: str) -> None:
    assert COMPUTE_KINDS[status] == kind
