"""'console' joins the sources an audit entry may name

A withdrawal made on the console's My site page was audited as coming from the API; the audit
log now says 'console'. Only the audit log admits it (a record version never comes from the
console: an upload page's batch is a spreadsheet's), and no client may claim it in
X-Registry-Source. The check constraint ck_audit_log_source is replaced; on SQLite that
rebuilds the table, so the append-only guard is dropped and created again around it, as 0006
does. Downgrading turns such entries back into 'api', what they were recorded as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 03:10:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_OLD = ('api', 'redcap-sync', 'spreadsheet')
_NEW = ('api', 'redcap-sync', 'spreadsheet', 'console')


def _replace_constraint(values: tuple[str, ...]) -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_constraint('source', type_='check')
        batch_op.create_check_constraint('source', sa.column('source').in_(values))


def _drop_append_only_guard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_log_no_{event}")


def _create_append_only_guard() -> None:
    """The audit log is append-only: the database itself refuses UPDATE and DELETE on it."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )


def upgrade() -> None:
    _drop_append_only_guard()
    _replace_constraint(_NEW)
    _create_append_only_guard()


def downgrade() -> None:
    _drop_append_only_guard()
    op.execute("UPDATE audit_log SET source = 'api' WHERE source = 'console'")
    _replace_constraint(_OLD)
    _create_append_only_guard()
