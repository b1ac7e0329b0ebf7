"""What a task runner works with: the conductor's databases, bus, clock, settings, network delivery
and notifier, without the Conductor itself (so task modules never import the service that runs them)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from canopy.clock import Clock
from canopy.config import Settings
from canopy.db.engine import Database, Databases
from canopy.observability.notifications import Notifier
from canopy.rpc.base import Transport

if TYPE_CHECKING:
    from canopy.conductor.netsync import NetSync


@dataclass
class TaskEnv:
    """The environment every task runner, the sweepers and the network delivery share."""

    settings: Settings
    dbs: Databases
    db: Database  # this cell's database
    cell_name: str
    bus: Transport
    clock: Clock
    notifier: Notifier
    name: str  # the conductor's name: its lease owner, its service host
    # the task id → the asyncio task driving it (the stuck-task sweeper cancels these)
    active_runs: dict[int, asyncio.Task[Any]] = field(default_factory=dict)
    # security group -> (loaded at, the groups whose rules name it, the hosts holding a port in one of them):
    # whom a boot's membership change goes to, without a read (canopy/conductor/sgsync.py)
    sg_holders: dict[str, tuple[float, set[str], set[str]]] = field(default_factory=dict)
    # delivers hosts' desired network state to their agents; set once the environment exists
    netsync: NetSync = field(init=False)
