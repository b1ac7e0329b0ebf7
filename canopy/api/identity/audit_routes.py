"""GET /identity/v3/canopy-audit: the audit trail of mutating calls, for admins (canopy/api/audit.py)."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response

from canopy.api.audit import list_records, to_dict
from canopy.api.errors import bad_request
from canopy.api.http import json_response, page_params, route


def parse_since(raw: str | None) -> dt.datetime | None:
    """An ISO 8601 time (`2026-12-08T00:00:00Z`) as naive UTC, or None."""
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"Invalid input for query parameters since. Value: {raw}. not an ISO 8601 time") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


async def list_audit(request: Request) -> Response:
    """Audit records in time order: `since`, `project_id`, `limit` and `marker` (a record id)."""
    cloud = request.app.state.cloud
    limit, marker = page_params(request, cloud.settings.api.max_page_size)
    since = parse_since(request.query_params.get("since"))
    project_id = request.query_params.get("project_id")
    writer = request.app.state.audit
    if writer is not None:
        await writer.flush()  # this process's queued records first: an admin reads what just happened
    try:
        records = await cloud.dbs.global_db.read_fresh(list_records, since=since, project_id=project_id,
                                                       limit=limit, marker=marker)
    except LookupError:
        raise bad_request(f"Invalid input for query parameters marker. Value: {marker}. no such record") from None
    base = cloud.settings.api.public_url.rstrip("/") + "/identity/v3/canopy-audit"
    links: dict[str, str | None] = {"self": str(request.url), "next": None, "previous": None}
    if records and len(records) == limit:
        links["next"] = f"{base}?limit={limit}&marker={records[-1].id}"
    return json_response({"audit_records": [to_dict(r) for r in records], "links": links})


ROUTES = [route("/v3/canopy-audit", list_audit, ["GET"], "identity:canopy-audit:list")]
