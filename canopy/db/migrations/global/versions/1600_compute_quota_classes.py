"""compute quota classes (issue 16): os-quota-class-sets' limits by class; the `default` class's
override the configured defaults for projects that have no limits of their own yet

Revision ID: 1600cmpg01
Revises: 18c3fa9de346
Create Date: 2026-12-08 00:10:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1600cmpg01'
down_revision: str | Sequence[str] | None = '18c3fa9de346'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'quota_classes',
        sa.Column('class_name', sa.String(255), nullable=False),
        sa.Column('instances', sa.Integer(), nullable=True),
        sa.Column('cores', sa.Integer(), nullable=True),
        sa.Column('ram', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('class_name', name=op.f('pk_quota_classes')),
    )


def downgrade() -> None:
    op.drop_table('quota_classes')
