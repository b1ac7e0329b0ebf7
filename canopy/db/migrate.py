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


def upgrade_part(engine: Engine, part: str, revision: str = "heads") -> None:
    """Bring one part's tables to `revision`; running it again changes nothing."""
    cfg = _config(part)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine, part: str) -> str | None:
    """The revision a database holds for one part (comma-joined if several heads), or None when it has none."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": f"alembic_version_{part}"})
        heads = ctx.get_current_heads()
        return ",".join(sorted(heads)) if heads else None


def head_revision(part: str) -> str | None:
    """The newest revision of a part (its heads joined by commas while branches are unmerged)."""
    heads = ScriptDirectory.from_config(_config(part)).get_heads()
    return ",".join(sorted(heads)) if heads else None


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
