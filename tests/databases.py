"""Private databases on the machine's MariaDB and PostgreSQL servers (tests/integration only)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text

MARIADB_SERVER = "mysql+pymysql://root@127.0.0.1:3306"
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def fresh_database(server: str, admin_db: str) -> Iterator[str]:
    """Yield the URL of a new, empty database on `server`; dropped afterwards."""
    name = f"canopy_t_{uuid.uuid4().hex[:10]}"
    engine = create_engine(f"{server}/{admin_db}", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"{server}/{name}"
    finally:
        with engine.connect() as conn:
            if server.startswith("postgresql"):
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()
