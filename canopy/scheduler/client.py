"""How a caller (the conductor) asks the scheduler for a host: the SelectHost message for a build task."""

from __future__ import annotations

from canopy.rpc.calls import SelectHost
from canopy.rpc.tasks import BuildPayload


def select_host_message(instance_uuid: str, payload: BuildPayload,
                        exclude_hosts: list[str] | None = None) -> SelectHost:
    """The SelectHost for a build task's payload (as the api wrote it), hints and batch included."""
    flavor, hints = payload.flavor, payload.scheduler_hints
    group = hints.group.model_dump() if hints.group is not None else None
    return SelectHost(
        instance_uuid=instance_uuid, project_id=payload.project_id, vcpus=flavor.vcpus,
        memory_mb=flavor.memory_mb, disk_gb=flavor.disk_gb, availability_zone=payload.availability_zone,
        force_host=payload.force_host, exclude_hosts=exclude_hosts or [],
        image_properties=payload.image_properties,
        flavor_extra_specs={k: str(v) for k, v in flavor.extra_specs.items()},
        network_ids=[n.network["id"] for n in payload.networks],
        group=group, same_host=list(hints.same_host), different_host=list(hints.different_host),
        reservation_id=payload.reservation_id if payload.count > 1 else "", batch_size=payload.count)
