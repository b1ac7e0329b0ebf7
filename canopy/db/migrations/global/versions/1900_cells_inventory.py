"""cells: the physical inventory (data centers, rows, racks, hosts)

Revision ID: 1900cells01
Revises: 0400net01
Create Date: 2026-12-01 12:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import canopy.db.types

revision: str = '1900cells01'
down_revision: str | Sequence[str] | None = '0400net01'  # racks refer to network_segments
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _stamps() -> list[sa.Column]:
    return [sa.Column('created_at', canopy.db.types.UTCDateTime(), nullable=False),
            sa.Column('updated_at', canopy.db.types.UTCDateTime(), nullable=False)]


def upgrade() -> None:
    op.create_table('datacenters',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    sa.Column('cell_name', sa.String(length=64), nullable=True),
    *_stamps(),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_datacenters'))
    )
    op.create_table('datacenter_rows',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('datacenter', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    *_stamps(),
    sa.ForeignKeyConstraint(['datacenter'], ['datacenters.name'],
                            name=op.f('fk_datacenter_rows_datacenter_datacenters')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datacenter_rows')),
    sa.UniqueConstraint('datacenter', 'name', name='uq_datacenter_rows_datacenter_name')
    )
    op.create_table('racks',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('datacenter', sa.String(length=64), nullable=False),
    sa.Column('row_id', sa.String(length=36), nullable=False),
    sa.Column('segment_id', sa.String(length=36), nullable=True),
    sa.Column('description', sa.String(length=255), nullable=False),
    *_stamps(),
    sa.ForeignKeyConstraint(['datacenter'], ['datacenters.name'], name=op.f('fk_racks_datacenter_datacenters')),
    sa.ForeignKeyConstraint(['row_id'], ['datacenter_rows.id'], name=op.f('fk_racks_row_id_datacenter_rows')),
    sa.ForeignKeyConstraint(['segment_id'], ['network_segments.id'],
                            name=op.f('fk_racks_segment_id_network_segments'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_racks')),
    sa.UniqueConstraint('datacenter', 'name', name='uq_racks_datacenter_name')
    )
    op.create_index('ix_racks_row', 'racks', ['row_id'], unique=False)
    op.create_table('inventory_hosts',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('rack_id', sa.String(length=36), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=True),
    sa.Column('macs', sa.JSON().with_variant(mysql.JSON(), 'mariadb').with_variant(mysql.JSON(), 'mysql'),
              nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    *_stamps(),
    sa.ForeignKeyConstraint(['rack_id'], ['racks.id'], name=op.f('fk_inventory_hosts_rack_id_racks')),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_inventory_hosts')),
    sa.UniqueConstraint('serial', name=op.f('uq_inventory_hosts_serial'))
    )
    op.create_index('ix_inventory_hosts_rack', 'inventory_hosts', ['rack_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_inventory_hosts_rack', table_name='inventory_hosts')
    op.drop_table('inventory_hosts')
    op.drop_index('ix_racks_row', table_name='racks')
    op.drop_table('racks')
    op.drop_table('datacenter_rows')
    op.drop_table('datacenters')
