"""db at scale: indexes for every filter and the default sort the API offers on cell tables

Revision ID: 0800dbidx01
Revises: 4372ce70460e
Create Date: 2026-11-26 12:00:00

"""
from collections.abc import Sequence

from alembic import op

revision: str = '0800dbidx01'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = [
    ('ix_instances_project_created', 'instances', ['project_id', 'deleted', 'created_at']),
    ('ix_instances_created_at', 'instances', ['created_at']),
    ('ix_instances_image_ref', 'instances', ['image_ref']),
    ('ix_instances_flavor_id', 'instances', ['flavor_id']),
    ('ix_instances_reservation', 'instances', ['reservation_id']),
    ('ix_instances_az', 'instances', ['availability_zone']),
    ('ix_ports_device_owner', 'ports', ['device_owner']),
    ('ix_ports_host_id', 'ports', ['host_id']),
    ('ix_ports_name', 'ports', ['name']),
    ('ix_ip_allocations_ip', 'ip_allocations', ['ip_address']),
    ('ix_services_host', 'services', ['host']),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
