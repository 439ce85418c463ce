"""'spreadsheet' joins the sources a record version and an audit entry may name

Issue 17: records sent from a spreadsheet (registry-submit, or the console's upload page) are
recorded as coming from a spreadsheet, so a data manager sees where each update came from. The
source columns are a non-native enum with a check constraint (ck_<table>_source); the constraint
is replaced by one that admits the new value. On SQLite that rebuilds the table, which would lose
the audit log's append-only triggers, so the guard is dropped and created again around it (as
0001 creates it). Downgrading turns such versions back into 'api'
(what they were recorded as before) so that the old constraint holds again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 23:30:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_TABLES = ('record_versions', 'audit_log')
_OLD = ('api', 'redcap-sync')
_NEW = ('api', 'redcap-sync', 'spreadsheet')


def _replace_constraint(table: str, values: tuple[str, ...]) -> None:
    # The column stays VARCHAR(16); only its check constraint (named by the convention) changes.
    with op.batch_alter_table(table, schema=None) as batch_op:
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
    for table in _TABLES:
        _replace_constraint(table, _NEW)
    _create_append_only_guard()


def downgrade() -> None:
    _drop_append_only_guard()
    for table in _TABLES:
        op.execute(f"UPDATE {table} SET source = 'api' WHERE source = 'spreadsheet'")
        _replace_constraint(table, _OLD)
    _create_append_only_guard()
