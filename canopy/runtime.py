"""The shared pieces a control-plane process runs with: settings, databases, bus, clock, tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from canopy.auth.tokens import TokenSigner
from canopy.clock import Clock
from canopy.config import Settings
from canopy.db.engine import Databases
from canopy.rpc.base import Transport


@dataclass
class Cloud:
    """What the api, scheduler and conductor share inside one process."""

    settings: Settings
    dbs: Databases
    bus: Transport
    clock: Clock = field(default_factory=Clock)
    tokens: TokenSigner = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = TokenSigner(self.settings.auth.token_secret, self.settings.auth.token_ttl_s)

    @property
    def cell_name(self) -> str:
        return self.settings.database.cell_name

    @property
    def image_dir(self) -> Path:
        path = self.settings.data_dir / "images"
        path.mkdir(parents=True, exist_ok=True)
        return path


def open_databases(settings: Settings) -> Databases:
    """The global and cell databases named by the settings."""
    from canopy.db.cells import attach_registered_cells

    db = settings.database
    dbs = Databases.from_urls(
        db.global_url, {db.cell_name: db.cell_url}, pool_size=db.pool_size, execution=db.execution, echo=db.echo,
        replicas=db.replica_map(), replica_max_lag_s=db.replica_max_lag_s, fresh_wait_s=db.fresh_wait_s,
        replica_check_s=db.replica_check_s,
    )
    attach_registered_cells(dbs)  # the cells `canopy cell create` registered, beside the configured one
    return dbs
