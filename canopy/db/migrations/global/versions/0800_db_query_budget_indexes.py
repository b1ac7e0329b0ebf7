"""db at scale: indexes for every filter the API offers on global tables

Revision ID: 0800dbidx02
Revises: 18c3fa9de346
Create Date: 2026-11-26 12:00:00

"""
from collections.abc import Sequence

from alembic import op

revision: str = '0800dbidx02'
down_revision: str | Sequence[str] | None = '18c3fa9de346'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = [
    ('ix_networks_name', 'networks', ['name']),
    ('ix_subnets_project', 'subnets', ['project_id']),
    ('ix_subnets_cidr', 'subnets', ['cidr']),
    ('ix_subnets_name', 'subnets', ['name']),
    ('ix_images_name', 'images', ['name']),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
