"""compute conformance (issue 16): access IPs, lock owner and reason, tags, the guest's posted password,
the shelved image of a shelved server on instances; which ports were created before the boot

Revision ID: 1600cmp01
Revises: 4372ce70460e
Create Date: 2026-12-08 00:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import canopy.db.types

revision: str = '1600cmp01'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(mysql.JSON(), 'mysql', 'mariadb')
_INSTANCE_COLUMNS = (
    ('access_ip_v4', sa.String(39)),
    ('access_ip_v6', sa.String(39)),
    ('locked_by', sa.String(16)),
    ('locked_reason', sa.String(255)),
    ('tags', _JSON),
    ('server_password', sa.Text()),
    ('shelved_image_id', sa.String(36)),
    ('shelved_at', canopy.db.types.UTCDateTime()),
)


def upgrade() -> None:
    # All nullable without defaults: adding them rewrites no rows (NULL reads as "none").
    for name, kind in _INSTANCE_COLUMNS:
        op.add_column('instances', sa.Column(name, kind, nullable=True))
    op.add_column('ports', sa.Column('preserve_on_delete', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ports') as batch:
        batch.drop_column('preserve_on_delete')
    with op.batch_alter_table('instances') as batch:
        for name, _ in reversed(_INSTANCE_COLUMNS):
            batch.drop_column(name)
