"""release_columns: a columnar copy of each release for the analyses

Each release keeps, per column the survival analyses and Cox models read, the values of every
record state it holds as the bytes of a numpy array (services/window/release_columns.py), so that an
analysis reads a few arrays instead of scanning and grouping the release (docs/quality.md B7).
The table starts empty: a release cut before this migration gets its copy written by the first
question asked of it. Withdrawal of consent deletes the copies of the releases that held the
record (privacy.md 2.1). On PostgreSQL the bytes are stored uncompressed (STORAGE EXTERNAL):
they are read far more often than written, and decompressing them costs more than reading them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 05:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('release_columns',
    sa.Column('release_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('domain', sa.Text(), nullable=True),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['release_id'], ['releases.id'], name=op.f('fk_release_columns_release_id_releases')),
    sa.PrimaryKeyConstraint('release_id', 'name', name=op.f('pk_release_columns'))
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE release_columns ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table('release_columns')
