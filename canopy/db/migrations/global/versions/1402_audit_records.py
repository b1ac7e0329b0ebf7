"""audit: one row per mutating API call (issue 14)

Revision ID: 1402audit01
Revises: 1400idn01
Create Date: 2026-12-08 00:40:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import canopy.db.types

revision: str = '1402audit01'
down_revision: str | Sequence[str] | None = '1400idn01'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_records',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('at', canopy.db.types.UTCDateTime(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=True),
    sa.Column('user_name', sa.String(length=255), nullable=True),
    sa.Column('project_id', sa.String(length=64), nullable=True),
    sa.Column('domain_id', sa.String(length=64), nullable=True),
    sa.Column('service', sa.String(length=16), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('route', sa.String(length=128), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('target_id', sa.String(length=255), nullable=True),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_records'))
    )
    op.create_index('ix_audit_records_at', 'audit_records', ['at', 'id'], unique=False)
    op.create_index('ix_audit_records_project_at', 'audit_records', ['project_id', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_records_project_at', table_name='audit_records')
    op.drop_index('ix_audit_records_at', table_name='audit_records')
    op.drop_table('audit_records')
