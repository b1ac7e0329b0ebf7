"""security groups: which groups each port is in (the groups are global; the binding lives with the port)

Revision ID: 1500sg02
Revises: 4372ce70460e
Create Date: 2026-12-01 12:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1500sg02'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('port_security_groups',
    sa.Column('port_id', sa.String(length=36), nullable=False),
    sa.Column('security_group_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['port_id'], ['ports.id'], name=op.f('fk_port_security_groups_port_id_ports'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('port_id', 'security_group_id', name=op.f('pk_port_security_groups'))
    )
    op.create_index('ix_port_security_groups_group', 'port_security_groups', ['security_group_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_port_security_groups_group', table_name='port_security_groups')
    op.drop_table('port_security_groups')
