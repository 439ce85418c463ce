"""Records of one site: validate, create, replace, read, list, history and withdraw.

Every write goes through plan_writes() and apply_writes(), whether it comes as one PUT, a POST or
a batch, so the rules for outcomes, versions and the audit log live in one place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime
from typing import Any, TypeVar

from marshmallow import ValidationError
from sqlalchemy import Row, TextClause, bindparam, delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from registry.db import bulk_insert, transaction, unit_of_work, utcnow
from registry.derived import DERIVED_FIELDS, derive
from registry.errors import BadRequest, Conflict, NotFound, PreconditionFailed, RecordInvalid
from registry.models import LIST_FIELDS, AuditEntry, Record, RecordVersion, Tombstone, flag_column
from registry.models.record import CELL_KEY_MODULUS
from registry.schemas.fields import (
    check_subject_id, is_acceptable_subject_id, problems_to_list,
)
from registry.schemas.record import (
    DICTIONARY_VERSION, SUBMITTED_FIELDS, PutRecordSchema, RecordSchema,
)
from registry.services.tokens import Caller

RECORDS = Record.__table__
T = TypeVar("T")
# Attempts of a write that lost a race to create the same subject (unique constraint).
WRITE_ATTEMPTS = 3


# --- mapping between the record as sent and the row as stored ---------------------------------

def canonical(data: dict[str, Any]) -> dict[str, Any]:
    """The submitted fields in a fixed form: every field present, absent = None, lists as []."""
    record = {name: data.get(name) for name in SUBMITTED_FIELDS}
    for name in LIST_FIELDS:
        record[name] = record[name] or []
    return record


def row_values(record: dict[str, Any], derived: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """Column values of a canonical record, derived fields included (computed if not given)."""
    values = {name: value for name, value in record.items() if name not in LIST_FIELDS}
    for name, codes in LIST_FIELDS.items():
        chosen = set(record[name])
        values.update({flag_column(name, code): code in chosen for code in codes})
    values.update(derive(record) if derived is None else derived)
    return values


def record_from_row(row: Any) -> dict[str, Any]:
    """The canonical submitted fields of a stored row (ORM object or Core row)."""
    get = row._mapping.__getitem__ if isinstance(row, Row) else row.__getattribute__
    record = {name: get(name) for name in SUBMITTED_FIELDS if name not in LIST_FIELDS}
    for name, codes in LIST_FIELDS.items():
        record[name] = [code for code in codes if get(flag_column(name, code))]
    return {name: record[name] for name in SUBMITTED_FIELDS}


def stored_view(row: Record) -> dict[str, Any]:
    """What the API shows of a stored record: its fields, and the derived values as stored."""
    return record_view(row.subject_id, record_from_row(row),
                       {name: getattr(row, name) for name in DERIVED_FIELDS}, row.version,
                       row.created_at, row.updated_at)


def record_view(subject_id: str, record: dict[str, Any], derived: dict[str, Any], version: int,
                created_at: datetime, updated_at: datetime) -> dict[str, Any]:
    """What the API shows of a record."""
    return {"subject_id": subject_id, **record, "derived": derived, "version": version,
            "created_at": created_at, "updated_at": updated_at}


def changes_between(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Field-by-field differences of two canonical records."""
    return {name: {"old": old[name], "new": new[name]}
            for name in SUBMITTED_FIELDS if old[name] != new[name]}


# --- validation --------------------------------------------------------------------------------

_schema = RecordSchema()


def validate_record(raw: Any) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """Validate one record with subject_id: (canonical data, []) or (None, errors)."""
    try:
        return canonical(_schema.load(raw)), []
    except ValidationError as error:
        return None, problems_to_list(error.messages)


def rules_in_force() -> str:
    """What a record was accepted under: dictionary version, inclusion threshold, current year."""
    return f"{DICTIONARY_VERSION}|{_schema.remission_threshold()}|{date.today().year}|"


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
                                                "updated_at", "submission_digest")] + [
    RECORDS.c[name] for name in SUBMITTED_FIELDS if name not in LIST_FIELDS] + [
    RECORDS.c[flag_column(name, code)] for name, codes in LIST_FIELDS.items() for code in codes]
_STORED = select(*_STORED_COLUMNS).where(
    RECORDS.c.site_id == bindparam("site_id"),
    RECORDS.c.subject_id.in_(bindparam("subjects", expanding=True)))
_STORED_FOR_UPDATE = _STORED.with_for_update()
_ONE_STORED_FOR_UPDATE = select(*_STORED_COLUMNS).where(
    RECORDS.c.site_id == bindparam("site_id"),
    RECORDS.c.subject_id == bindparam("subject_id")).with_for_update()
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
    stored = connection.execute(_ONE_STORED_FOR_UPDATE, where).first()
    if stored is None and connection.dialect.name == "postgresql":
        _lock_subjects(connection, site_id, [subject_id])
        stored = connection.execute(_ONE_STORED_FOR_UPDATE, where).first()
    withdrawn = stored is None and bool(_withdrawn(connection, site_id, [subject_id]))
    return _plan(0, subject_id, record, None, stored, withdrawn)


# The columns a write sets from the record: the submitted fields, the list flags, the derived
# fields (the keys of row_values()).
ROW_COLUMNS: tuple[str, ...] = (
    *(name for name in SUBMITTED_FIELDS if name not in LIST_FIELDS),
    *(flag_column(name, code) for name, codes in LIST_FIELDS.items() for code in codes),
    *DERIVED_FIELDS)


def _written_with_history(write: str) -> TextClause:
    """PostgreSQL: `write` (an INSERT or UPDATE of one record RETURNING its id), its version
    and its audit entry as one statement. The record's values travel as one JSON object: a
    statement of more than 50 parameters is parsed again by psycopg on every execution."""
    return text(
        f"WITH written AS ({write}),"
        " version AS (INSERT INTO record_versions"
        " (record_id, version, created_at, source, token_id, changed_fields, data)"
        " SELECT id, CAST(:version AS integer), CAST(:now AS timestamptz), CAST(:source AS text),"
        " CAST(:token_id AS integer), CAST(:changed_fields AS json), CAST(:data AS json)"
        " FROM written)"
        " INSERT INTO audit_log"
        " (occurred_at, token_id, site_id, subject_id, action, source, version, changed_fields)"
        " SELECT CAST(:now AS timestamptz), CAST(:token_id AS integer), CAST(:site_id AS integer),"
        " CAST(:subject_id AS text), CAST(:action AS text), CAST(:source AS text),"
        " CAST(:version AS integer), CAST(:changed_fields AS json) FROM written")


_NEW_ROW = "json_populate_record(NULL::records, CAST(:row AS json)) AS n"
_CREATE_ONE = _written_with_history(
    f"INSERT INTO records (site_id, subject_id, version, cell_key, submission_digest, created_at,"
    f" updated_at, {', '.join(ROW_COLUMNS)})"
    f" SELECT CAST(:site_id AS integer), CAST(:subject_id AS text), CAST(:version AS integer),"
    f" CAST(:cell_key AS integer), CAST(:digest AS text), CAST(:now AS timestamptz),"
    f" CAST(:now AS timestamptz), {', '.join(f'n.{name}' for name in ROW_COLUMNS)}"
    f" FROM {_NEW_ROW} RETURNING id")
_UPDATE_ONE = _written_with_history(
    f"UPDATE records SET version = CAST(:version AS integer), updated_at = CAST(:now AS"
    f" timestamptz), submission_digest = CAST(:digest AS text),"
    f" {', '.join(f'{name} = n.{name}' for name in ROW_COLUMNS)}"
    f" FROM {_NEW_ROW} WHERE records.id = CAST(:record_id AS integer) RETURNING records.id")


def _write_one_with_history(connection: Connection, caller: Caller, plan: PlannedWrite,
                            source: str, now: datetime) -> None:
    """PostgreSQL: write one created or updated record, its version and its audit entry in one
    statement (one round trip)."""
    values = {
        "row": json.dumps(row_values(plan.record, plan.derived)), "version": plan.version,
        "now": now, "digest": plan.digest, "source": source, "token_id": caller.token_id,
        "site_id": caller.site_id, "subject_id": plan.subject_id, "action": plan.action,
        "changed_fields": json.dumps(plan.changed_fields), "data": json.dumps(plan.record)}
    if plan.outcome == "created":
        connection.execute(_CREATE_ONE, {**values,
                                         "cell_key": secrets.randbelow(CELL_KEY_MODULUS)})
    else:
        connection.execute(_UPDATE_ONE, {**values, "record_id": plan.existing.id})


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


# --- single-record operations ------------------------------------------------------------------

@dataclass(frozen=True)
class VersionCondition:
    """The versions a conditional request names (If-Match, If-None-Match): some, or any."""

    versions: frozenset[int] = frozenset()
    any_version: bool = False

    def names(self, current: int | None) -> bool:
        """Whether the record's current version (None: no record) is one of those named."""
        return current is not None and (self.any_version or current in self.versions)


_put_schema = PutRecordSchema()


def validate_put(subject_id: str, raw: Any) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """Validate the body of a PUT and the subject_id of its URL in one pass: (canonical data,
    []) or (None, every problem of both)."""
    errors: list[dict[str, str]] = []
    try:
        check_subject_id(subject_id)
    except ValidationError as error:
        errors.extend(problems_to_list({"subject_id": error.messages}))
    try:
        data: dict[str, Any] | None = _put_schema.load(raw)
    except ValidationError as error:
        data = None
        errors.extend(problems_to_list(error.messages))
    sent = raw.get("subject_id") if isinstance(raw, dict) else None
    if isinstance(sent, str) and sent != subject_id and is_acceptable_subject_id(sent):
        errors.append({"field": "subject_id", "code": "not_allowed_here",
                       "message": "must equal the subject_id of the URL, or be left out"})
    if errors:
        return None, errors
    return canonical(data), []


def _refuse_if_withdrawn(caller: Caller, subject_id: Any) -> None:
    """409 subject_withdrawn for a withdrawn subject: asked before a body's own problems are
    reported, since no body could be accepted for that subject."""
    if not is_acceptable_subject_id(subject_id):
        return
    with unit_of_work(read_only=True) as session:
        if session.scalar(select(Tombstone.id).where(Tombstone.site_id == caller.site_id,
                                                     Tombstone.subject_id == subject_id)):
            raise _withdrawn_conflict()


def _withdrawn_conflict() -> Conflict:
    return Conflict("subject_withdrawn", "this subject was withdrawn and may not be submitted "
                                         "again")


def _view_of(plan: PlannedWrite, written_at: datetime) -> dict[str, Any]:
    """The answer to a write: the record with the timestamps as stored."""
    if plan.existing is None:
        return record_view(plan.subject_id, plan.record, plan.derived, 1, written_at, written_at)
    updated_at = written_at if plan.outcome == "updated" else plan.existing.updated_at
    return record_view(plan.subject_id, plan.record, plan.derived, plan.version,
                       plan.existing.created_at, updated_at)


def _write_one(caller: Caller, subject_id: str, record: dict[str, Any], source: str,
               check: Callable[[PlannedWrite], None]) -> tuple[str, dict[str, Any]]:
    """Write one record after `check` has accepted its plan; a withdrawn subject is a 409."""

    def work() -> tuple[str, dict[str, Any]]:
        with transaction() as connection:
            plan = plan_write(connection, caller.site_id, subject_id, record)
            if plan.outcome == "rejected":
                raise _withdrawn_conflict()
            check(plan)
            written_at = apply_writes(connection, caller, [plan], source)
            return plan.outcome, _view_of(plan, written_at)

    return retrying_races(work)


def put_record(caller: Caller, subject_id: str, raw: Any, *,
               if_match: VersionCondition | None = None,
               if_none_match: VersionCondition | None = None,
               source: str = "api") -> tuple[str, dict[str, Any]]:
    """Create or replace a record (idempotent) from the body as sent: returns the outcome and
    the stored record. A withdrawn subject answers 409 whatever the body; otherwise every
    problem of the body and of the URL's subject_id is reported at once (422). `if_match`
    must name the current version; `if_none_match` must not (`*`: the record must not exist
    yet)."""
    record, errors = validate_put(subject_id, raw)
    if errors:
        _refuse_if_withdrawn(caller, subject_id)
        raise RecordInvalid(errors)

    def check(plan: PlannedWrite) -> None:
        current = None if plan.existing is None else plan.existing.version
        if if_match is not None and not if_match.names(current):
            raise PreconditionFailed("If-Match does not name the current version; GET the "
                                     "record and apply the change again")
        if if_none_match is not None and if_none_match.names(current):
            raise PreconditionFailed("If-None-Match names the current version (or is * and the "
                                     "record exists)")

    return _write_one(caller, subject_id, record, source, check)


def create_record(caller: Caller, raw: Any, *, source: str = "api") -> dict[str, Any]:
    """Create a record, from the body as sent, that must not exist yet (409 if it does, or if
    its subject was withdrawn, whatever else the body holds)."""
    record, errors = validate_record(raw)
    if errors:
        _refuse_if_withdrawn(caller, raw.get("subject_id") if isinstance(raw, dict) else None)
        raise RecordInvalid(errors)

    def check(plan: PlannedWrite) -> None:
        if plan.outcome != "created":
            raise Conflict("record_exists", "a record with this subject_id exists; use PUT "
                                            "to replace it")

    return _write_one(caller, raw["subject_id"], record, source, check)[1]


def _stored(session: Session, caller: Caller, subject_id: str) -> Record:
    if not is_acceptable_subject_id(subject_id):  # could never have been stored
        raise NotFound("no record with this subject_id at your site")
    record = session.scalar(select(Record).where(Record.site_id == caller.site_id,
                                                 Record.subject_id == subject_id))
    if record is None:
        raise NotFound("no record with this subject_id at your site")
    return record


def get_record(caller: Caller, subject_id: str) -> dict[str, Any]:
    """One of the caller's site's records."""
    with unit_of_work(read_only=True) as session:
        row = _stored(session, caller, subject_id)
        return stored_view(row)


def _encode_cursor(record_id: int) -> str:
    return base64.urlsafe_b64encode(f"r{record_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("r"):
            raise ValueError
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor is not one this registry gave out; start again without it",
                         errors=[{"field": "cursor", "code": "invalid_cursor",
                                  "message": "use next_cursor of the previous page"}]) from None


def list_records(caller: Caller, *, limit: int, cursor: str | None = None,
                 updated_since: datetime | None = None) -> dict[str, Any]:
    """A page of the site's records in a stable order, and the cursor of the next page."""
    query = select(Record).where(Record.site_id == caller.site_id)
    if cursor:
        query = query.where(Record.id > _decode_cursor(cursor))
    if updated_since is not None:
        query = query.where(Record.updated_at >= updated_since)
    with unit_of_work(read_only=True) as session:
        rows = list(session.scalars(query.order_by(Record.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "records": [stored_view(row) for row in rows],
        "next_cursor": _encode_cursor(rows[-1].id) if more else None,
    }


def record_history(caller: Caller, subject_id: str) -> dict[str, Any]:
    """The versions of a record: number, time, source and which fields changed."""
    with unit_of_work(read_only=True) as session:
        record = _stored(session, caller, subject_id)
        versions = session.execute(
            select(RecordVersion.version, RecordVersion.created_at, RecordVersion.source,
                   RecordVersion.changed_fields)
            .where(RecordVersion.record_id == record.id).order_by(RecordVersion.version))
        return {"subject_id": subject_id, "versions": [
            {"version": version, "created_at": created_at, "source": source,
             "changed_fields": changed} for version, created_at, source, changed in versions]}


def withdraw_record(caller: Caller, subject_id: str, reason: str = "consent_withdrawn",
                    source: str = "api") -> None:
    """Withdrawal of consent: erase the record and all its versions, keep a tombstone."""
    if not is_acceptable_subject_id(subject_id):
        raise NotFound("no record with this subject_id at your site")
    with unit_of_work() as session:
        record = session.scalar(select(Record).where(
            Record.site_id == caller.site_id, Record.subject_id == subject_id
        ).with_for_update())
        if record is None:
            already = session.scalar(select(Tombstone.id).where(
                Tombstone.site_id == caller.site_id, Tombstone.subject_id == subject_id))
            if already is not None:
                return  # withdrawing twice is the same as once
            raise NotFound("no record with this subject_id at your site")
        session.execute(delete(RecordVersion).where(RecordVersion.record_id == record.id))
        session.execute(delete(Record).where(Record.id == record.id))
        session.add(Tombstone(site_id=caller.site_id, subject_id=subject_id, reason=reason))
        session.add(AuditEntry(token_id=caller.token_id, site_id=caller.site_id,
                               subject_id=subject_id, action="withdraw", source=source,
                               version=None, changed_fields=[]))
