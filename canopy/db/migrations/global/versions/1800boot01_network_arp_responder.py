"""network: the ARP responder, a per-network option (off unless an admin turns it on)

Revision ID: 1800boot01
Revises: 0400net01
Create Date: 2026-12-08 00:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1800boot01'
down_revision: str | Sequence[str] | None = '0400net01'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('networks', sa.Column('arp_responder', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('networks') as batch:
        batch.drop_column('arp_responder')
