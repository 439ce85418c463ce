"""Writing records: planning each write against what is stored, locking, and writing records
with their versions and audit entries.

Every write goes through plan_writes() (or plan_write() for one record) and apply_writes(),
whether it comes as one PUT, a POST or a batch, so the rules for outcomes, versions and the audit
log live in one place. Every statement is built from the table definitions.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import (
    JSON, Integer, Row, String, bindparam, func, insert, literal_column, select,
    text, update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from registry.core.derived import derive
from registry.core.record import DICTIONARY_VERSION, SUBMITTED_FIELDS, remission_threshold
from registry.db import UtcDateTime, bulk_insert, execute_hot, first_hot, utcnow
from registry.errors import Conflict
from registry.models import AuditEntry, RecordVersion, Tombstone
from registry.models.record import CELL_KEY_MODULUS
from registry.services.intake.record_rows import (
    RECORDS, ROW_COLUMNS, SUBMITTED_COLUMNS, changes_between, record_from_row, row_values,
)
from registry.services.access.tokens import Caller

VERSIONS, AUDIT = RecordVersion.__table__, AuditEntry.__table__
T = TypeVar("T")
# Attempts of a write that lost a race to create the same subject (unique constraint).
WRITE_ATTEMPTS = 3

# --- validation --------------------------------------------------------------------------------

def rules_in_force() -> str:
    """What a record was accepted under: dictionary version, inclusion threshold, current year."""
    return f"{DICTIONARY_VERSION}|{remission_threshold()}|{date.today().year}|"


def submission_digest(raw: Any, rules: str) -> str | None:
    """SHA-256 of a record as sent, under `rules_in_force()`; None for something that is not a
    JSON object."""
    if not isinstance(raw, dict):
        return None
    try:
        text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256((rules + text).encode()).hexdigest()


# --- planning and applying writes --------------------------------------------------------------

@dataclass
class PlannedWrite:
    """What one submitted record will do: its outcome and everything needed to write it."""

    index: int
    subject_id: str | None
    outcome: str  # created | updated | unchanged | rejected (| stale: a resend to plan again)
    record: dict[str, Any] | None = None
    existing: Any = None  # the stored row, if any
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    version: int | None = None
    digest: str | None = None  # submission_digest of the record as sent, when known

    @cached_property
    def derived(self) -> dict[str, Any]:
        """The derived fields of the record to write (computed once)."""
        return derive(self.record)

    @property
    def changed_fields(self) -> list[str]:
        """The fields a version and its audit entry name: all of a new record's, else those
        that changed."""
        return list(self.changes) if self.outcome == "updated" else list(SUBMITTED_FIELDS)

    @property
    def action(self) -> str:
        """The audit log's action for this write."""
        return "create" if self.outcome == "created" else "update"

    def result(self, *, written: bool = True) -> dict[str, Any]:
        """The per-record line of a batch response. When the batch was not written (atomic,
        with a rejected record), an accepted record is `not_written` and says what it would
        have been (`would_be`)."""
        line: dict[str, Any] = {"index": self.index, "subject_id": self.subject_id,
                                "outcome": self.outcome}
        if not written and self.outcome != "rejected":
            line.update(outcome="not_written", would_be=self.outcome)
        if self.outcome == "rejected":
            line["errors"] = self.errors
        else:
            line["version"] = self.version
        if self.outcome == "updated":
            line["changes"] = self.changes
        return line


def rejected(index: int, subject_id: str | None, errors: list[dict[str, str]]) -> PlannedWrite:
    """A record that will not be written."""
    return PlannedWrite(index, subject_id, "rejected", errors=errors)


# One transaction-scoped advisory lock per (site, subject), taken in one global order (the
# sorted subquery) so that two writers never wait on each other crosswise.
_LOCK_SUBJECTS = text(
    "SELECT count(pg_advisory_xact_lock(:site_id, key)) FROM ("
    " SELECT DISTINCT hashtext(subject) AS key FROM unnest(CAST(:subjects AS text[])) AS subject"
    " ORDER BY key) AS sorted")


def _lock_subjects(connection: Connection, site_id: int, subjects: list[str]) -> None:
    """PostgreSQL: queue writers of the same subjects, also those creating it, so that a batch
    and single PUTs creating one subject wait for each other instead of colliding on the
    unique key (which a retry could lose again and again)."""
    connection.execute(_LOCK_SUBJECTS, {"site_id": site_id, "subjects": subjects})


# What a write reads of a stored record: its submitted fields (to find the changes), and what
# the answer shows. Not the derived fields, the cell key or the digest, which it rewrites.
_STORED_COLUMNS = [RECORDS.c[name] for name in ("id", "subject_id", "version", "created_at",
                                                "updated_at", "submission_digest",
                                                *SUBMITTED_COLUMNS)]
_STORED = select(*_STORED_COLUMNS).where(
    RECORDS.c.site_id == bindparam("site_id"),
    RECORDS.c.subject_id.in_(bindparam("subjects", expanding=True)))
_STORED_FOR_UPDATE = _STORED.with_for_update()


class _JsonArray(FunctionElement):
    """A JSON array of the values given, built by the database (json_build_array on
    PostgreSQL, json_array elsewhere)."""

    type = JSON()
    name = "json_array"
    inherit_cache = True


@compiles(_JsonArray)
def _json_array(element: _JsonArray, compiler: Any, **kw: Any) -> str:
    return f"json_array({compiler.process(element.clauses, **kw)})"


@compiles(_JsonArray, "postgresql")
def _json_build_array(element: _JsonArray, compiler: Any, **kw: Any) -> str:
    return f"json_build_array({compiler.process(element.clauses, **kw)})"


# A single write reads its stored record, locked, with the submitted fields as one JSON array
# (in SUBMITTED_COLUMNS' order) instead of 51 columns, which the driver and SQLAlchemy would
# otherwise describe again on every PUT. Neither database takes more than 100 arguments.
# Of the other columns only what a plan and the answer read: not the subject (the statement
# names it), nor the digest (only a resend, which a single write never is, compares it).
_ONE_STORED_HEAD = ("id", "version", "created_at", "updated_at")
assert len(SUBMITTED_COLUMNS) < 100, "read the submitted fields in two arrays"
_ONE_STORED_FOR_UPDATE = select(
    *(RECORDS.c[name] for name in _ONE_STORED_HEAD),
    _JsonArray(*(RECORDS.c[name] for name in SUBMITTED_COLUMNS)).label("submitted")).where(
    RECORDS.c.site_id == bindparam("site_id"),
    RECORDS.c.subject_id == bindparam("subject_id")).with_for_update()


def _one_stored(row: Any) -> SimpleNamespace | None:
    """The stored record read by _ONE_STORED_FOR_UPDATE, its columns as attributes (what
    record_from_row and a plan read)."""
    if row is None:
        return None
    return SimpleNamespace(**dict(zip(SUBMITTED_COLUMNS, row.submitted)),
                           **{name: row[index] for index, name in enumerate(_ONE_STORED_HEAD)})
_WITHDRAWN = select(Tombstone.__table__.c.subject_id).where(
    Tombstone.__table__.c.site_id == bindparam("site_id"),
    Tombstone.__table__.c.subject_id.in_(bindparam("subjects", expanding=True)))


def _withdrawn(connection: Connection, site_id: int, subjects: list[str]) -> set[str]:
    """Which of these subjects (none of them stored) were withdrawn."""
    if not subjects:
        return set()
    return set(connection.scalars(_WITHDRAWN, {"site_id": site_id, "subjects": subjects}))


def _plan(index: int, subject_id: str, record: dict[str, Any] | None, digest: str | None,
          stored: Row | None, withdrawn: bool) -> PlannedWrite:
    """The outcome of one valid record, given its stored row (if any). A record of None is a
    resend (its digest equalled the stored record's when last read): unchanged if it still
    does, else `stale` (to be validated and planned again)."""
    if withdrawn:
        return rejected(index, subject_id, [{
            "field": "subject_id", "code": "subject_withdrawn",
            "message": "this subject was withdrawn and may not be submitted again"}])
    if record is None:
        if stored is not None and stored.submission_digest == digest:
            return PlannedWrite(index, subject_id, "unchanged", existing=stored,
                                version=stored.version, digest=digest)
        return PlannedWrite(index, subject_id, "stale", digest=digest)
    if stored is None:
        return PlannedWrite(index, subject_id, "created", record, version=1, digest=digest)
    changes = changes_between(record_from_row(stored), record)
    outcome = "updated" if changes else "unchanged"
    return PlannedWrite(index, subject_id, outcome, record, stored, changes,
                        version=stored.version + (1 if changes else 0), digest=digest)


def plan_writes(connection: Connection, site_id: int,
                items: list[tuple[int, str, dict[str, Any] | None, str | None]], *, lock: bool
                ) -> list[PlannedWrite]:
    """Decide the outcome of each valid (index, subject_id, record, digest) against what is
    stored; a record of None is a resend recognised by its digest (see _plan).

    With `lock`, the stored rows are locked until the transaction ends (PostgreSQL), so a
    concurrent writer waits instead of overwriting."""
    subjects = [item[1] for item in items]
    if lock and connection.dialect.name == "postgresql":
        _lock_subjects(connection, site_id, subjects)
    stored = {row.subject_id: row for row in connection.execute(
        _STORED_FOR_UPDATE if lock else _STORED, {"site_id": site_id, "subjects": subjects})}
    # A stored record cannot be withdrawn (withdrawal erases it): ask only about the others.
    withdrawn = _withdrawn(connection, site_id,
                           [subject_id for subject_id in subjects if subject_id not in stored])
    return [_plan(index, subject_id, record, digest, stored.get(subject_id),
                  subject_id in withdrawn) for index, subject_id, record, digest in items]


def plan_write(connection: Connection, site_id: int, subject_id: str, record: dict[str, Any]
               ) -> PlannedWrite:
    """Decide the outcome of one valid record, its stored row locked until the transaction
    ends.

    One record needs one lock: the stored row's, taken first. Only a subject not stored yet
    also takes its advisory lock (PostgreSQL), to queue behind a writer creating it, and is
    looked up again. Holding at most that row lock while waiting, a single write never waits
    crosswise with a batch, which takes its advisory locks before its row locks."""
    where = {"site_id": site_id, "subject_id": subject_id}
    stored = _one_stored(first_hot(connection, _ONE_STORED_FOR_UPDATE, where))
    if stored is None and connection.dialect.name == "postgresql":
        _lock_subjects(connection, site_id, [subject_id])
        stored = _one_stored(first_hot(connection, _ONE_STORED_FOR_UPDATE, where))
    withdrawn = stored is None and bool(_withdrawn(connection, site_id, [subject_id]))
    return _plan(0, subject_id, record, None, stored, withdrawn)


def _param(name: str, type_: Any) -> Any:
    return bindparam(name, type_=type_)


# What one PostgreSQL statement writes to the record's row besides its fields.
_CREATED = ("site_id", "subject_id", "version", "cell_key", "submission_digest", "created_at",
            "updated_at")
_UPDATED = ("version", "submission_digest", "updated_at")


def _new_row(columns: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL: the row's values, sent as one JSON object and read as a row of the records
    table (a statement of more than 50 parameters is parsed again by psycopg on every
    execution); (the row, its columns by name). Columns are named as text: inside a CTE each
    would be labelled "n.x AS x", which would push the statement past psycopg's 4096
    characters."""
    new = func.json_populate_record(literal_column("NULL::records"), _param("row", JSON)) \
        .table_valued(*columns, name="n")
    return new, {name: literal_column(f"{new.name}.{name}") for name in columns}


def _with_history(write: Any) -> Any:
    """PostgreSQL: `write` (an INSERT or UPDATE of one record RETURNING its id), its version
    and its audit entry as one statement, built from the three tables."""
    written = write.cte("written")
    # Parameters are not named after a column of records: an UPDATE would take them as values.
    history = {"version": _param("number", Integer), "source": _param("source", String),
               "token_id": _param("token_id", Integer),
               "changed_fields": _param("changed_fields", JSON)}
    now = _param("now", UtcDateTime())
    version = insert(VERSIONS).from_select(
        ["record_id", "created_at", "data", *history],
        select(written.c.id, now, _param("data", JSON), *history.values()),
        include_defaults=False).cte("version")
    audit = {"occurred_at": now, "site_id": _param("site", Integer),
             "subject_id": _param("subject", String), "action": _param("action", String)}
    return insert(AUDIT).from_select(
        [*audit, *history], select(*audit.values(), *history.values()).select_from(written),
        include_defaults=False).add_cte(version)


def _create_one() -> Any:
    new, columns = _new_row(_CREATED + ROW_COLUMNS)
    return _with_history(insert(RECORDS).from_select(
        list(columns), select(*columns.values()).select_from(new), include_defaults=False)
        .returning(RECORDS.c.id))


def _update_one() -> Any:
    new, _ = _new_row(_UPDATED + ROW_COLUMNS)
    # An UPDATE names no labels, and its FROM comes from the row's own columns.
    # The row's new version follows the stored one (the row is locked since it was read): said
    # as a condition, it also joins the new row to the table.
    return _with_history(update(RECORDS).values({name: new.c[name] for name in new.c.keys()})
                         .where(RECORDS.c.id == _param("record_id", Integer),
                                RECORDS.c.version < new.c.version).returning(RECORDS.c.id))


_CREATE_ONE, _UPDATE_ONE = _create_one(), _update_one()


def one_write(caller: Caller, plan: PlannedWrite, source: str, now: datetime
              ) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL: the statement writing one created or updated record, its version and its
    audit entry (one round trip), and its parameters. benchmarks/put_statements.py builds B3's
    pgbench baseline from the same statement and parameters."""
    row = {**row_values(plan.record, plan.derived), "version": plan.version,
           "submission_digest": plan.digest, "updated_at": now.isoformat()}
    values = {"number": plan.version, "now": now, "source": source,
              "token_id": caller.token_id, "site": caller.site_id,
              "subject": plan.subject_id, "action": plan.action,
              "changed_fields": plan.changed_fields, "data": plan.record}
    if plan.outcome == "created":
        row.update({"site_id": caller.site_id, "subject_id": plan.subject_id,
                    "cell_key": secrets.randbelow(CELL_KEY_MODULUS),
                    "created_at": now.isoformat()})
        return _CREATE_ONE, {**values, "row": row}
    return _UPDATE_ONE, {**values, "row": row, "record_id": plan.existing.id}


def _write_one_with_history(connection: Connection, caller: Caller, plan: PlannedWrite,
                            source: str, now: datetime) -> None:
    """PostgreSQL: write one created or updated record, its version and its audit entry in one
    statement (one round trip)."""
    execute_hot(connection, *one_write(caller, plan, source, now))


def apply_writes(connection: Connection, caller: Caller, plans: Iterable[PlannedWrite],
                 source: str) -> datetime:
    """Write created and updated records with their versions and audit entries, in bulk (one
    statement for a single record on PostgreSQL); returns the time stored as their
    updated_at (and created_at for new records)."""
    now = utcnow()
    created = [plan for plan in plans if plan.outcome == "created"]
    updated = [plan for plan in plans if plan.outcome == "updated"]
    if not created and not updated:
        return now
    if len(created) + len(updated) == 1 and connection.dialect.name == "postgresql":
        _write_one_with_history(connection, caller, (created + updated)[0], source, now)
        return now
    ids: dict[str, int] = {}
    if created:
        rows = [{**row_values(plan.record, plan.derived), "site_id": caller.site_id,
                 "subject_id": plan.subject_id, "version": 1,
                 "cell_key": secrets.randbelow(CELL_KEY_MODULUS),
                 "submission_digest": plan.digest,
                 "created_at": now, "updated_at": now} for plan in created]
        bulk_insert(connection, RECORDS, rows)
        # Read the new ids back: neither COPY nor psycopg's executemany return them.
        new_ids = connection.execute(select(RECORDS.c.subject_id, RECORDS.c.id).where(
            RECORDS.c.site_id == caller.site_id,
            RECORDS.c.subject_id.in_([plan.subject_id for plan in created])))
        ids.update({subject_id: record_id for subject_id, record_id in new_ids})
    if updated:
        connection.execute(
            update(RECORDS).where(RECORDS.c.id == bindparam("record_id")),
            [{**row_values(plan.record, plan.derived), "record_id": plan.existing.id,
              "version": plan.version, "updated_at": now, "submission_digest": plan.digest}
             for plan in updated],
        )
        ids.update({plan.subject_id: plan.existing.id for plan in updated})
    written = created + updated
    bulk_insert(connection, RecordVersion.__table__, [
        {"record_id": ids[plan.subject_id], "version": plan.version, "created_at": now,
         "source": source, "token_id": caller.token_id,
         "changed_fields": plan.changed_fields, "data": plan.record} for plan in written])
    bulk_insert(connection, AuditEntry.__table__, [
        {"occurred_at": now, "token_id": caller.token_id, "site_id": caller.site_id,
         "subject_id": plan.subject_id, "action": plan.action, "source": source,
         "version": plan.version, "changed_fields": plan.changed_fields} for plan in written])
    return now


def retrying_races(work: Callable[[], T]) -> T:
    """Run a write again when it lost a race to create the same subject."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            return work()
        except IntegrityError:
            if attempt == WRITE_ATTEMPTS - 1:
                raise Conflict("write_conflict", "the record was changed concurrently; retry")
    raise AssertionError("unreachable")

