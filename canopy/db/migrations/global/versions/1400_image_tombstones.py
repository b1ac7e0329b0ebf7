"""images: the IDs of deleted images, never to be given to another image (issue 14)

Revision ID: 1400img01
Revises: 18c3fa9de346
Create Date: 2026-12-07 12:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import canopy.db.types

revision: str = '1400img01'
down_revision: str | Sequence[str] | None = '18c3fa9de346'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('deleted_images',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('deleted_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deleted_images'))
    )


def downgrade() -> None:
    op.drop_table('deleted_images')
