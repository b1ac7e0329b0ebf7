"""virt: hypervisor details (accelerator, host CPU) reported by libvirt agents

Revision ID: 0500virt01
Revises: 4372ce70460e
Create Date: 2026-11-25 14:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import canopy.db.types

revision: str = '0500virt01'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('hypervisor_details',
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('accelerator', sa.String(length=16), nullable=False),
    sa.Column('cpu_info', sa.JSON().with_variant(mysql.JSON(), 'mysql', 'mariadb'), nullable=False),
    sa.Column('updated_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('host', name=op.f('pk_hypervisor_details'))
    )


def downgrade() -> None:
    op.drop_table('hypervisor_details')
