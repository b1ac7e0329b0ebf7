"""Alembic environment for the global tables (its own version table, so the two can live apart)."""

from alembic import context

from canopy.db.tables_global import metadata

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="alembic_version_global",
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
