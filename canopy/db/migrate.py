"""Schema migrations: the global and the cell tables are two Alembic histories, applied separately."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from canopy.db.engine import Database, Databases

MIGRATIONS = Path(__file__).parent / "migrations"
PARTS = ("global", "cell")


def _config(part: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / part))
    return cfg


def upgrade_part(engine: Engine, part: str, revision: str = "head") -> None:
    """Bring one part's tables to `revision`; running it again changes nothing."""
    cfg = _config(part)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine, part: str) -> str | None:
    """The revision a database holds for one part, or None when it has none."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": f"alembic_version_{part}"})
        return ctx.get_current_revision()


def head_revision(part: str) -> str | None:
    return ScriptDirectory.from_config(_config(part)).get_current_head()


def upgrade_all(dbs: Databases) -> None:
    """Upgrade the global database and every cell database."""
    upgrade_part(dbs.global_db.primary, "global")
    done: set[int] = set()
    for db in dbs.cells.values():
        if id(db) not in done:
            upgrade_part(db.primary, "cell")
            done.add(id(db))


def is_current(db: Database, part: str) -> bool:
    return current_revision(db.primary, part) == head_revision(part)
