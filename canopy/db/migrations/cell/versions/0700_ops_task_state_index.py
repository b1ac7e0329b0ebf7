"""operability: index instances by task_state, for the stuck-task sweeper

Revision ID: 0700ops01
Revises: 4372ce70460e
Create Date: 2026-11-25 12:00:00

"""
from collections.abc import Sequence

from alembic import op

revision: str = '0700ops01'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The sweeper asks for servers in some task state and not updated lately: almost every row has no
    # task state, so this index keeps that a short range scan however many servers there are.
    op.create_index('ix_instances_task_state', 'instances', ['task_state', 'updated_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_instances_task_state', table_name='instances')
