"""os-quota-class-sets (admin): the limits of a quota class. The `default` class is the one Nova uses:
its limits are the defaults a project gets (os-quota-sets/{id}/defaults, a project's first quota row,
a quota-set DELETE). Only instances, cores and RAM are enforced; the other quotas show their fixed values."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from canopy.api.compute import quota_store
from canopy.api.compute.common import cloud_of
from canopy.api.compute.microversion import mv
from canopy.api.compute.quotas import ENFORCED, parse_quota_set, quota_view
from canopy.api.errors import bad_request
from canopy.api.http import json_response, read_object, require_admin, route

_CLASS_NAME = re.compile(r"^[a-zA-Z0-9_.\- ]{1,255}$")


def _class_name(request: Request) -> str:
    name = request.path_params["class_name"]
    if not _CLASS_NAME.match(name):
        raise bad_request(f"Invalid quota class name {name!r}: 1-255 letters, digits, '_', '.', '-' or spaces.")
    return name


async def _view(request: Request, name: str) -> dict[str, int]:
    cloud = cloud_of(request)
    limits = await cloud.dbs.global_db.read_fresh(quota_store.class_limits, name, cloud.settings.quota)
    rows = {res: {"limit": getattr(limits, res), "in_use": 0} for res in ENFORCED}
    return {k: v["limit"] for k, v in quota_view(mv(request), rows).items()}


async def show_quota_class(request: Request) -> Response:
    """GET /os-quota-class-sets/{class_name}."""
    require_admin(request)
    name = _class_name(request)
    return json_response({"quota_class_set": {"id": name, **await _view(request, name)}})


async def update_quota_class(request: Request) -> Response:
    """PUT /os-quota-class-sets/{class_name}: set some limits of the class (no id in the answer, as Nova)."""
    require_admin(request)
    name = _class_name(request)
    raw = await read_object(request, "quota_class_set")
    if "force" in raw:
        raise bad_request("Invalid input for field/attribute quota_class_set. Additional properties are not "
                          "allowed ('force' was unexpected)")
    limits, _ = parse_quota_set(raw, mv(request))
    await cloud_of(request).dbs.global_db.write(quota_store.set_class_limits, name, limits)
    return json_response({"quota_class_set": await _view(request, name)})


ROUTES: list[BaseRoute] = [
    route("/v2.1/os-quota-class-sets/{class_name}", show_quota_class, ["GET"], "compute:quota-class-sets:show"),
    route("/v2.1/os-quota-class-sets/{class_name}", update_quota_class, ["PUT"], "compute:quota-class-sets:update"),
]
