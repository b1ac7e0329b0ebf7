"""mobility: the migrations table (resizes, cold and live migrations, evacuations)

Revision ID: 0600mob01
Revises: 4372ce70460e
Create Date: 2026-11-26 10:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import canopy.db.types

revision: str = '0600mob01'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(mysql.JSON(), 'mysql', 'mariadb')


def upgrade() -> None:
    op.create_table('migrations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('instance_uuid', sa.String(length=36), nullable=False),
    sa.Column('migration_type', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('source_compute', sa.String(length=255), nullable=True),
    sa.Column('dest_compute', sa.String(length=255), nullable=True),
    sa.Column('old_flavor', _JSON, nullable=False),
    sa.Column('new_flavor', _JSON, nullable=False),
    sa.Column('old_vm_state', sa.String(length=32), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('memory_total', sa.BigInteger(), nullable=True),
    sa.Column('memory_processed', sa.BigInteger(), nullable=True),
    sa.Column('memory_remaining', sa.BigInteger(), nullable=True),
    sa.Column('disk_total', sa.BigInteger(), nullable=True),
    sa.Column('disk_processed', sa.BigInteger(), nullable=True),
    sa.Column('disk_remaining', sa.BigInteger(), nullable=True),
    sa.Column('created_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_migrations')),
    sa.UniqueConstraint('uuid', name=op.f('uq_migrations_uuid'))
    )
    op.create_index('ix_migrations_instance', 'migrations', ['instance_uuid', 'id'], unique=False)
    op.create_index('ix_migrations_status', 'migrations', ['status', 'updated_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_migrations_status', table_name='migrations')
    op.drop_index('ix_migrations_instance', table_name='migrations')
    op.drop_table('migrations')
