"""Workloads as data: a small TOML file per profile (canopy/sim/profiles/NAME.toml, or any path).

    rate = 20.0              # boots offered per second, open loop (0: as fast as it goes, `concurrency` in flight)
    lifetime_s = [5.0, 20.0] # how long a server lives once ACTIVE before its next step
    [flavors]                # flavor id -> weight
    [actions]                # chance that a server is stopped and started / rebooted / resized before its delete
    [faults]                 # spawn_fail_fraction, silent_fraction, kill_at_s (a conductor is killed, restarted)
    [storm]                  # at_s: every agent restarts at once (a power event) and reconciles
    [enroll]                 # hosts_per_day, day_s: the fleet grows while the workload runs
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class Profile:
    """One workload."""

    name: str
    rate: float = 10.0
    concurrency: int = 32
    lifetime_s: tuple[float, float] = (5.0, 20.0)
    projects: int = 4
    flavors: dict[str, float] = field(default_factory=lambda: {"1": 1.0})
    multi_create: float = 0.0
    server_group: float = 0.0
    delete: bool = True
    actions: dict[str, float] = field(default_factory=dict)
    faults: dict[str, float] = field(default_factory=dict)
    storm: dict[str, float] = field(default_factory=dict)
    enroll: dict[str, float] = field(default_factory=dict)
    public_ip_hold_s: float = 0.0

    def with_rate(self, rate: float | None) -> Profile:
        """The same workload at another offered rate."""
        if rate is None:
            return self
        return Profile(**{**self.__dict__, "rate": rate})


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name (enroll, churn, storm, faults) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise ValueError(f"no profile {name_or_path!r} (built in: {known})")
    data: dict[str, Any] = tomllib.loads(path.read_text())
    unknown = set(data) - set(Profile.__dataclass_fields__)
    if unknown:
        raise ValueError(f"profile {path}: unknown keys {sorted(unknown)}")
    if "lifetime_s" in data:
        data["lifetime_s"] = tuple(data["lifetime_s"])
    return Profile(**{"name": path.stem, **data})
