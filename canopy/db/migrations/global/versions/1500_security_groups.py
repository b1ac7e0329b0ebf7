"""security groups: groups and their rules (global), and per-project quotas on them

Revision ID: 1500sg01
Revises: 0400net01
Create Date: 2026-12-01 12:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from canopy.db.types import UTCDateTime

revision: str = '1500sg01'
down_revision: str | Sequence[str] | None = '0400net01'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('security_groups',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('tag', sa.Integer(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_security_groups')),
    sa.UniqueConstraint('tag', name=op.f('uq_security_groups_tag'))
    )
    op.create_index('ix_security_groups_project', 'security_groups', ['project_id', 'name'], unique=False)
    op.create_table('security_group_rules',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('security_group_id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('ethertype', sa.String(length=4), nullable=False),
    sa.Column('protocol', sa.String(length=40), nullable=True),
    sa.Column('port_range_min', sa.Integer(), nullable=True),
    sa.Column('port_range_max', sa.Integer(), nullable=True),
    sa.Column('remote_ip_prefix', sa.String(length=64), nullable=True),
    sa.Column('remote_group_id', sa.String(length=36), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('mark', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['security_group_id'], ['security_groups.id'],
                            name=op.f('fk_security_group_rules_security_group_id_security_groups'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_security_group_rules')),
    sa.UniqueConstraint('mark', name=op.f('uq_security_group_rules_mark'))
    )
    op.create_index('ix_security_group_rules_group', 'security_group_rules', ['security_group_id'], unique=False)
    op.create_index('ix_security_group_rules_remote', 'security_group_rules', ['remote_group_id'], unique=False)
    # nullable, no default: adding them rewrites no row (NULL: the configured default)
    op.add_column('network_quotas', sa.Column('security_group', sa.Integer(), nullable=True))
    op.add_column('network_quotas', sa.Column('security_group_rule', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('network_quotas') as batch:
        batch.drop_column('security_group_rule')
        batch.drop_column('security_group')
    op.drop_index('ix_security_group_rules_remote', table_name='security_group_rules')
    op.drop_index('ix_security_group_rules_group', table_name='security_group_rules')
    op.drop_table('security_group_rules')
    op.drop_index('ix_security_groups_project', table_name='security_groups')
    op.drop_table('security_groups')
