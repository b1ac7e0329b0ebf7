"""network: port bindings (OpenFlow numbers), port QoS, public address holds, named locks

Revision ID: 0400net02
Revises: 4372ce70460e
Create Date: 2026-11-25 13:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import canopy.db.types

revision: str = '0400net02'
down_revision: str | Sequence[str] | None = '4372ce70460e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('port_bindings',
    sa.Column('port_id', sa.String(length=36), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('ofport', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['port_id'], ['ports.id'], name=op.f('fk_port_bindings_port_id_ports'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('port_id', name=op.f('pk_port_bindings')),
    sa.UniqueConstraint('host', 'ofport', name='uq_port_bindings_host_ofport')
    )
    op.create_table('port_qos',
    sa.Column('port_id', sa.String(length=36), nullable=False),
    sa.Column('policy_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['port_id'], ['ports.id'], name=op.f('fk_port_qos_port_id_ports'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('port_id', name=op.f('pk_port_qos'))
    )
    op.create_index('ix_port_qos_policy', 'port_qos', ['policy_id'], unique=False)
    op.create_table('ip_holds',
    sa.Column('subnet_id', sa.String(length=36), nullable=False),
    sa.Column('ip_address', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('released_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('subnet_id', 'ip_address', name=op.f('pk_ip_holds'))
    )
    op.create_index('ix_ip_holds_released', 'ip_holds', ['released_at'], unique=False)
    op.create_table('network_locks',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_network_locks'))
    )


def downgrade() -> None:
    op.drop_table('network_locks')
    op.drop_index('ix_ip_holds_released', table_name='ip_holds')
    op.drop_table('ip_holds')
    op.drop_index('ix_port_qos_policy', table_name='port_qos')
    op.drop_table('port_qos')
    op.drop_table('port_bindings')
