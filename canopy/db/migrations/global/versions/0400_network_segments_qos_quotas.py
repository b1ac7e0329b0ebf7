"""network: segments and rack mapping, QoS policies and bandwidth limit rules, network quotas

Revision ID: 0400net01
Revises: 18c3fa9de346
Create Date: 2026-11-25 13:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import canopy.db.types

revision: str = '0400net01'
down_revision: str | Sequence[str] | None = '18c3fa9de346'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('network_segments',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('network_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('network_type', sa.String(length=16), nullable=False),
    sa.Column('physical_network', sa.String(length=64), nullable=True),
    sa.Column('segmentation_id', sa.Integer(), nullable=True),
    sa.Column('created_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['network_id'], ['networks.id'], name=op.f('fk_network_segments_network_id_networks'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_network_segments'))
    )
    op.create_index('ix_network_segments_network', 'network_segments', ['network_id'], unique=False)
    op.create_table('segment_racks',
    sa.Column('network_id', sa.String(length=36), nullable=False),
    sa.Column('datacenter', sa.String(length=64), nullable=False),
    sa.Column('rack', sa.String(length=64), nullable=False),
    sa.Column('segment_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['segment_id'], ['network_segments.id'],
                            name=op.f('fk_segment_racks_segment_id_network_segments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('network_id', 'datacenter', 'rack', name=op.f('pk_segment_racks'))
    )
    op.create_index('ix_segment_racks_segment', 'segment_racks', ['segment_id'], unique=False)
    op.create_table('qos_policies',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('shared', sa.Boolean(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qos_policies'))
    )
    op.create_index('ix_qos_policies_project', 'qos_policies', ['project_id'], unique=False)
    op.create_table('qos_bandwidth_limit_rules',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('policy_id', sa.String(length=36), nullable=False),
    sa.Column('max_kbps', sa.Integer(), nullable=False),
    sa.Column('max_burst_kbps', sa.Integer(), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['policy_id'], ['qos_policies.id'],
                            name=op.f('fk_qos_bandwidth_limit_rules_policy_id_qos_policies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qos_bandwidth_limit_rules')),
    sa.UniqueConstraint('policy_id', 'direction', name='uq_qos_bandwidth_limit_rules_policy_direction')
    )
    op.create_table('network_qos',
    sa.Column('network_id', sa.String(length=36), nullable=False),
    sa.Column('policy_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['network_id'], ['networks.id'], name=op.f('fk_network_qos_network_id_networks'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['policy_id'], ['qos_policies.id'], name=op.f('fk_network_qos_policy_id_qos_policies')),
    sa.PrimaryKeyConstraint('network_id', name=op.f('pk_network_qos'))
    )
    op.create_table('network_quotas',
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('public_ip', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('project_id', name=op.f('pk_network_quotas'))
    )


def downgrade() -> None:
    op.drop_table('network_quotas')
    op.drop_table('network_qos')
    op.drop_table('qos_bandwidth_limit_rules')
    op.drop_index('ix_qos_policies_project', table_name='qos_policies')
    op.drop_table('qos_policies')
    op.drop_index('ix_segment_racks_segment', table_name='segment_racks')
    op.drop_table('segment_racks')
    op.drop_index('ix_network_segments_network', table_name='network_segments')
    op.drop_table('network_segments')
