"""console sessions, and the secret that signs the console's cookie and CSRF tokens

The secret is drawn here, once per database, so that every worker and instance signs and checks
cookies alike, and a restart does not sign everyone out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 20:10:00
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_sha256', sa.String(length=64), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'],
                            name=op.f('fk_console_sessions_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_sessions')),
    sa.UniqueConstraint('key_sha256', name=op.f('uq_console_sessions_key_sha256'))
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_sessions_token_id'), ['token_id'],
                              unique=False)
    secrets_table = sa.table('registry_secrets', sa.column('name', sa.String),
                             sa.column('value', sa.String),
                             sa.column('created_at', sa.DateTime(timezone=True)))
    op.bulk_insert(secrets_table, [{"name": "console", "value": secrets.token_hex(32),
                                    "created_at": datetime.now(timezone.utc)}])


def downgrade() -> None:
    op.execute("DELETE FROM registry_secrets WHERE name = 'console'")
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_sessions_token_id'))
    op.drop_table('console_sessions')
