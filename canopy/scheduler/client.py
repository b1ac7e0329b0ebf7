"""How a caller (the conductor) asks the scheduler for a host: the SelectHost message for a build task."""

from __future__ import annotations

from typing import Any

from canopy.rpc.calls import SelectHost


def select_host_message(instance_uuid: str, payload: dict[str, Any],
                        exclude_hosts: list[str] | None = None) -> SelectHost:
    """The SelectHost for a build task's payload (as the api wrote it), hints and batch included."""
    flavor, hints = payload["flavor"], payload.get("scheduler_hints") or {}
    count = int(payload.get("count", 1))
    return SelectHost(
        instance_uuid=instance_uuid, project_id=payload["project_id"], vcpus=flavor["vcpus"],
        memory_mb=flavor["ram"], disk_gb=flavor["disk"], availability_zone=payload.get("availability_zone"),
        force_host=payload.get("force_host"), exclude_hosts=exclude_hosts or [],
        image_properties=payload.get("image_properties") or {},
        flavor_extra_specs={k: str(v) for k, v in (flavor.get("extra_specs") or {}).items()},
        network_ids=[n["network"]["id"] for n in payload.get("networks", [])],
        group=hints.get("group"), same_host=list(hints.get("same_host", [])),
        different_host=list(hints.get("different_host", [])),
        reservation_id=payload.get("reservation_id", "") if count > 1 else "", batch_size=count)
