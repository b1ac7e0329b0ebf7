"""image: members (an image shared with other projects, each accepting or rejecting it)

Revision ID: 1600img01
Revises: 18c3fa9de346
Create Date: 2026-12-07 23:30:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import canopy.db.types

revision: str = '1600img01'
down_revision: str | Sequence[str] | None = '18c3fa9de346'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('image_members',
    sa.Column('image_id', sa.String(length=36), nullable=False),
    sa.Column('member_id', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_image_members_image_id_images'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'member_id', name=op.f('pk_image_members'))
    )
    op.create_index('ix_image_members_member', 'image_members', ['member_id', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_image_members_member', table_name='image_members')
    op.drop_table('image_members')
