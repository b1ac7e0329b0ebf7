"""scheduler: host aggregates and server groups

Revision ID: 0300sched01
Revises: 18c3fa9de346
Create Date: 2026-11-25 12:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import canopy.db.types

revision: str = '0300sched01'
down_revision: str | Sequence[str] | None = '18c3fa9de346'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(mysql.JSON(), 'mariadb').with_variant(mysql.JSON(), 'mysql')


def upgrade() -> None:
    op.create_table('aggregates',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('availability_zone', sa.String(length=255), nullable=True),
    sa.Column('metadata', JSON, nullable=False),
    sa.Column('created_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('deleted_at', canopy.db.types.UTCDateTime(), nullable=True),
    sa.Column('deleted', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aggregates')),
    sa.UniqueConstraint('uuid', name=op.f('uq_aggregates_uuid')),
    sa.UniqueConstraint('name', 'deleted', name='uq_aggregates_name_deleted'),
    )
    op.create_index('ix_aggregates_updated_at', 'aggregates', ['updated_at'], unique=False)
    op.create_table('aggregate_hosts',
    sa.Column('aggregate_id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['aggregate_id'], ['aggregates.id'], name=op.f('fk_aggregate_hosts_aggregate_id_aggregates'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('aggregate_id', 'host', name=op.f('pk_aggregate_hosts')),
    )
    op.create_index('ix_aggregate_hosts_host', 'aggregate_hosts', ['host'], unique=False)
    op.create_table('server_groups',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('policy', sa.String(length=32), nullable=False),
    sa.Column('rules', JSON, nullable=False),
    sa.Column('created_at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_groups')),
    sa.UniqueConstraint('uuid', name=op.f('uq_server_groups_uuid')),
    )
    op.create_index('ix_server_groups_project', 'server_groups', ['project_id'], unique=False)
    op.create_table('server_group_members',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('instance_uuid', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['server_groups.id'],
                            name=op.f('fk_server_group_members_group_id_server_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'instance_uuid', name=op.f('pk_server_group_members')),
    )
    op.create_index('ix_server_group_members_instance', 'server_group_members', ['instance_uuid'], unique=False)


def downgrade() -> None:
    op.drop_table('server_group_members')
    op.drop_table('server_groups')
    op.drop_table('aggregate_hosts')
    op.drop_table('aggregates')
