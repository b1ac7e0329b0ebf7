"""cells: a host's enrollment state (pending until its health checks first pass)

Revision ID: 1901cells02
Revises: 0900health01
Create Date: 2026-12-08 01:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1901cells02'
down_revision: str | Sequence[str] | None = '0900health01'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no rows (NULL: registered without enrolling).
    op.add_column('hosts', sa.Column('enrollment', sa.String(length=16), nullable=True))
    op.create_index('ix_hosts_enrollment', 'hosts', ['enrollment'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_hosts_enrollment', table_name='hosts')
    with op.batch_alter_table('hosts') as batch:
        batch.drop_column('enrollment')
