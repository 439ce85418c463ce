"""registry secrets: the key that draws the noise of aggregate answers

The secret is drawn here, once per database, so that every app instance on the database uses the
same one and a restored backup answers aggregate queries exactly as before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 01:06:29.420825
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table('registry_secrets',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_registry_secrets'))
    )
    op.bulk_insert(table, [{"name": "perturbation", "value": secrets.token_hex(32),
                            "created_at": datetime.now(timezone.utc)}])


def downgrade() -> None:
    op.drop_table('registry_secrets')
