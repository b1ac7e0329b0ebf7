"""agent health: the failing health checks an agent's last heartbeat reported, on its service row

Revision ID: 0900health01
Revises: 4372ce70460e
Create Date: 2026-11-25 15:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0900health01'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no rows (NULL: no failing check reported).
    op.add_column('services', sa.Column('health', sa.JSON().with_variant(mysql.JSON(), 'mysql', 'mariadb'),
                                        nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('services') as batch:
        batch.drop_column('health')
