"""cells: enrollment tokens, and what an enrolled host reported

Revision ID: 1901cells01
Revises: 1900cells01
Create Date: 2026-12-08 01:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import canopy.db.types

revision: str = '1901cells01'
down_revision: str | Sequence[str] | None = '1900cells01'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('enrollment_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('cell_name', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('created_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('expires_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('used_at', canopy.db.types.UTCDateTime(), nullable=True),
    sa.Column('used_by', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollment_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_enrollment_tokens_token_hash'))
    )
    op.create_index('ix_enrollment_tokens_host', 'enrollment_tokens', ['host'], unique=False)
    # Nullable, no default: adding them rewrites no rows.
    op.add_column('inventory_hosts', sa.Column(
        'hardware', sa.JSON().with_variant(mysql.JSON(), 'mariadb').with_variant(mysql.JSON(), 'mysql'),
        nullable=True))
    op.add_column('inventory_hosts', sa.Column('enrolled_at', canopy.db.types.UTCDateTime(), nullable=True))
    op.add_column('inventory_hosts', sa.Column('credential_hash', sa.String(length=64), nullable=True))
    op.create_index('ix_inventory_hosts_state', 'inventory_hosts', ['state'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_inventory_hosts_state', table_name='inventory_hosts')
    with op.batch_alter_table('inventory_hosts') as batch:
        batch.drop_column('credential_hash')
        batch.drop_column('enrolled_at')
        batch.drop_column('hardware')
    op.drop_index('ix_enrollment_tokens_host', table_name='enrollment_tokens')
    op.drop_table('enrollment_tokens')
