"""scheduler: server group placements and affinity anchors

Revision ID: 0300sched02
Revises: 4372ce70460e
Create Date: 2026-11-25 12:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import canopy.db.types

revision: str = '0300sched02'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('group_placements',
    sa.Column('group_uuid', sa.String(length=36), nullable=False),
    sa.Column('instance_uuid', sa.String(length=36), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('group_uuid', 'instance_uuid', name=op.f('pk_group_placements')),
    )
    op.create_index('ix_group_placements_group_host', 'group_placements', ['group_uuid', 'host'], unique=False)
    op.create_table('group_anchors',
    sa.Column('group_uuid', sa.String(length=36), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('updated_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('group_uuid', name=op.f('pk_group_anchors')),
    )


def downgrade() -> None:
    op.drop_table('group_anchors')
    op.drop_table('group_placements')
