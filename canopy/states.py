"""Instance states with the OpenStack names, the status the API shows for them, and the table of
which action may start from which state (the task-state machine's entry points)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class PowerState(IntEnum):
    """Nova's power states, as the Compute API shows them (the agent's drivers report them, the conductor
    records them: both take them from here)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


# vm_state
ACTIVE = "active"
BUILDING = "building"
STOPPED = "stopped"
PAUSED = "paused"
SUSPENDED = "suspended"
RESIZED = "resized"
RESCUED = "rescued"
ERROR = "error"
DELETED = "deleted"
SOFT_DELETED = "soft-delete"
SHELVED = "shelved"
SHELVED_OFFLOADED = "shelved_offloaded"

# task_state
SCHEDULING = "scheduling"
NETWORKING = "networking"
BLOCK_DEVICE_MAPPING = "block_device_mapping"
SPAWNING = "spawning"
POWERING_OFF = "powering-off"
POWERING_OFF_SOFT = "powering-off-soft"
POWERING_OFF_HARD = "powering-off-hard"
POWERING_ON = "powering-on"
REBOOTING = "rebooting"
REBOOTING_HARD = "rebooting_hard"
REBOOT_STARTED_HARD = "reboot_started_hard"
DELETING = "deleting"
PAUSING = "pausing"
UNPAUSING = "unpausing"
SUSPENDING = "suspending"
RESUMING = "resuming"
# mobility (issue 6)
RESIZE_PREP = "resize_prep"
RESIZE_MIGRATING = "resize_migrating"
RESIZE_MIGRATED = "resize_migrated"
RESIZE_FINISH = "resize_finish"
RESIZE_REVERTING = "resize_reverting"
RESIZE_CONFIRMING = "resize_confirming"
IMAGE_SNAPSHOT = "image_snapshot"
IMAGE_PENDING_UPLOAD = "image_pending_upload"
IMAGE_UPLOADING = "image_uploading"
REBUILDING = "rebuilding"
REBUILD_SPAWNING = "rebuild_spawning"
RESCUING = "rescuing"
UNRESCUING = "unrescuing"
MIGRATING = "migrating"
# shelve, backup (issue 16)
SHELVING = "shelving"
SHELVING_IMAGE_PENDING_UPLOAD = "shelving_image_pending_upload"
SHELVING_IMAGE_UPLOADING = "shelving_image_uploading"
SHELVING_OFFLOADING = "shelving_offloading"
UNSHELVING = "unshelving"
IMAGE_BACKUP = "image_backup"
INTERFACE_ATTACHING = "interface_attaching"  # Nova holds a lock, not a task state; these make it visible
INTERFACE_DETACHING = "interface_detaching"

BUILD_STEPS = (SCHEDULING, NETWORKING, BLOCK_DEVICE_MAPPING, SPAWNING)

_STATUS = {
    ACTIVE: "ACTIVE",
    BUILDING: "BUILD",
    STOPPED: "SHUTOFF",
    PAUSED: "PAUSED",
    SUSPENDED: "SUSPENDED",
    RESIZED: "VERIFY_RESIZE",
    RESCUED: "RESCUE",
    ERROR: "ERROR",
    DELETED: "DELETED",
    SOFT_DELETED: "SOFT_DELETED",
    SHELVED: "SHELVED",
    SHELVED_OFFLOADED: "SHELVED_OFFLOADED",
}
_TASK_STATUS = {
    (ACTIVE, REBOOTING): "REBOOT",
    (ACTIVE, REBOOTING_HARD): "HARD_REBOOT",
    (ACTIVE, REBOOT_STARTED_HARD): "HARD_REBOOT",
    (STOPPED, REBOOTING_HARD): "HARD_REBOOT",
    (STOPPED, REBOOT_STARTED_HARD): "HARD_REBOOT",
    (ERROR, REBOOTING_HARD): "HARD_REBOOT",
    (ERROR, REBOOT_STARTED_HARD): "HARD_REBOOT",
    **{(vm, t): "RESIZE" for vm in (ACTIVE, STOPPED)
       for t in (RESIZE_PREP, RESIZE_MIGRATING, RESIZE_MIGRATED, RESIZE_FINISH)},
    (RESIZED, RESIZE_REVERTING): "REVERT_RESIZE",
    **{(vm, REBUILDING): "REBUILD" for vm in (ACTIVE, STOPPED, ERROR)},
    **{(vm, REBUILD_SPAWNING): "REBUILD" for vm in (ACTIVE, STOPPED, ERROR)},
    (ACTIVE, MIGRATING): "MIGRATING",
}


def status_of(vm_state: str, task_state: str | None) -> str:
    """The `status` the Compute API shows for a vm_state and task_state."""
    return _TASK_STATUS.get((vm_state, task_state or "")) or _STATUS.get(vm_state, "UNKNOWN")


# status filter (API) → vm_states
STATUS_TO_VM_STATES: dict[str, tuple[str, ...]] = {}
for _vm, _status in _STATUS.items():
    STATUS_TO_VM_STATES.setdefault(_status, ())
    STATUS_TO_VM_STATES[_status] += (_vm,)
STATUS_TO_VM_STATES["REBOOT"] = (ACTIVE,)
STATUS_TO_VM_STATES["HARD_REBOOT"] = (ACTIVE,)
STATUS_TO_VM_STATES["RESIZE"] = (ACTIVE, STOPPED)
STATUS_TO_VM_STATES["REBUILD"] = (ACTIVE, STOPPED, ERROR)
STATUS_TO_VM_STATES["MIGRATING"] = (ACTIVE,)


@dataclass(frozen=True, slots=True)
class ActionRule:
    """How an action starts: from which vm_states, and the task_state it sets."""

    action: str
    from_vm_states: tuple[str, ...]
    task_state: str


ACTIONS: dict[str, ActionRule] = {
    rule.action: rule
    for rule in (
        ActionRule("start", (STOPPED,), POWERING_ON),
        ActionRule("stop", (ACTIVE, ERROR), POWERING_OFF),
        ActionRule("stop_soft", (ACTIVE,), POWERING_OFF_SOFT),
        ActionRule("stop_hard", (ACTIVE, ERROR), POWERING_OFF_HARD),
        ActionRule("reboot_soft", (ACTIVE,), REBOOTING),
        ActionRule("reboot_hard", (ACTIVE, STOPPED, ERROR, PAUSED, SUSPENDED), REBOOTING_HARD),
        ActionRule("pause", (ACTIVE,), PAUSING),
        ActionRule("unpause", (PAUSED,), UNPAUSING),
        ActionRule("suspend", (ACTIVE,), SUSPENDING),
        ActionRule("resume", (SUSPENDED,), RESUMING),
        ActionRule("resize", (ACTIVE, STOPPED), RESIZE_PREP),
        ActionRule("migrate", (ACTIVE, STOPPED), RESIZE_PREP),
        ActionRule("confirm_resize", (RESIZED,), RESIZE_CONFIRMING),
        ActionRule("revert_resize", (RESIZED,), RESIZE_REVERTING),
        ActionRule("snapshot", (ACTIVE, STOPPED, PAUSED, SUSPENDED), IMAGE_SNAPSHOT),
        ActionRule("rebuild", (ACTIVE, STOPPED, ERROR), REBUILDING),
        ActionRule("evacuate", (ACTIVE, STOPPED, ERROR), REBUILDING),
        ActionRule("rescue", (ACTIVE, STOPPED, ERROR), RESCUING),
        ActionRule("unrescue", (RESCUED,), UNRESCUING),
        ActionRule("live_migrate", (ACTIVE, PAUSED), MIGRATING),
        ActionRule("backup", (ACTIVE, STOPPED, PAUSED, SUSPENDED), IMAGE_BACKUP),
        ActionRule("shelve", (ACTIVE, STOPPED, PAUSED, SUSPENDED), SHELVING),
        ActionRule("shelve_offload", (SHELVED,), SHELVING_OFFLOADING),
        ActionRule("unshelve", (SHELVED, SHELVED_OFFLOADED), UNSHELVING),
        ActionRule("attach_interface", (ACTIVE, PAUSED, STOPPED, SHELVED, SHELVED_OFFLOADED), INTERFACE_ATTACHING),
        ActionRule("detach_interface", (ACTIVE, PAUSED, STOPPED, SHELVED, SHELVED_OFFLOADED), INTERFACE_DETACHING),
        ActionRule("delete", (ACTIVE, BUILDING, STOPPED, ERROR, PAUSED, SUSPENDED, RESIZED, RESCUED, SOFT_DELETED,
                              SHELVED, SHELVED_OFFLOADED), DELETING),
    )
}

# The vm_state each power action leaves behind when it succeeds.
RESULT_VM_STATE = {
    "start": ACTIVE,
    "stop": STOPPED,
    "stop_soft": STOPPED,
    "stop_hard": STOPPED,
    "reboot_soft": ACTIVE,
    "reboot_hard": ACTIVE,
    "pause": PAUSED,
    "unpause": ACTIVE,
    "suspend": SUSPENDED,
    "resume": ACTIVE,
}

# Nova's action names in os-instance-actions.
ACTION_NAMES = {
    "build": "create",
    "start": "start",
    "stop": "stop",
    "stop_soft": "stop_soft",
    "stop_hard": "stop_hard",
    "reboot_soft": "reboot",
    "reboot_hard": "reboot",
    "delete": "delete",
    "pause": "pause",
    "unpause": "unpause",
    "suspend": "suspend",
    "resume": "resume",
    "resize": "resize",
    "migrate": "migrate",
    "confirm_resize": "confirmResize",
    "revert_resize": "revertResize",
    "snapshot": "createImage",
    "rebuild": "rebuild",
    "evacuate": "evacuate",
    "rescue": "rescue",
    "unrescue": "unrescue",
    "live_migrate": "live-migration",
    "backup": "createBackup",
    "shelve": "shelve",
    "shelve_offload": "shelveOffload",
    "unshelve": "unshelve",
    "attach_interface": "attach_interface",
    "detach_interface": "detach_interface",
}

# Task kinds of the mobility actions (issue 6), dispatched by the conductor.
MOBILITY_KINDS = ("resize", "migrate", "confirm_resize", "revert_resize", "snapshot", "rebuild", "evacuate",
                  "rescue", "unrescue", "live_migrate")
