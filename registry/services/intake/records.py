"""Records of one site, the use cases: create, replace, read, list, history and withdraw.

Writes are planned and applied by services/intake/writes.py (the same path as a batch); rows map to
records through services/intake/record_rows.py.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from registry.core.fields import check_subject_id, is_acceptable_subject_id, problems_to_list
from registry.core.record import PutRecordSchema, canonical, validate_record
from registry.db import transaction, unit_of_work
from registry.errors import BadRequest, Conflict, NotFound, PreconditionFailed, RecordInvalid
from registry.models import AuditEntry, Record, RecordVersion, Tombstone
from registry.permissions import Action, authorize
from registry.services.intake.record_rows import derived_from_row, record_from_row
from registry.services.window.releases import erase_from_releases
from registry.services.access.tokens import Caller
from registry.services.intake.writes import PlannedWrite, apply_writes, plan_write, retrying_races


def stored_view(row: Record) -> dict[str, Any]:
    """What the API shows of a stored record: its fields, and the derived values as stored."""
    return record_view(row.subject_id, record_from_row(row), derived_from_row(row),
                       row.version, row.created_at, row.updated_at)


def record_view(subject_id: str, record: dict[str, Any], derived: dict[str, Any], version: int,
                created_at: datetime, updated_at: datetime) -> dict[str, Any]:
    """What the API shows of a record."""
    return {"subject_id": subject_id, **record, "derived": derived, "version": version,
            "created_at": created_at, "updated_at": updated_at}


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
        data: dict[str, Any] | None = _put_schema.load_record(raw)
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
    authorize(caller.role, Action.WRITE_RECORDS)
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
    authorize(caller.role, Action.WRITE_RECORDS)
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
    authorize(caller.role, Action.READ_RECORDS)
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
    authorize(caller.role, Action.READ_RECORDS)
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
    authorize(caller.role, Action.READ_RECORDS)
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
    """Withdrawal of consent: erase the record, all its versions and its states in every
    release; keep a tombstone."""
    authorize(caller.role, Action.WRITE_RECORDS)
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
        erase_from_releases(session, record.id)
        session.execute(delete(Record).where(Record.id == record.id))
        session.add(Tombstone(site_id=caller.site_id, subject_id=subject_id, reason=reason))
        session.add(AuditEntry(token_id=caller.token_id, site_id=caller.site_id,
                               subject_id=subject_id, action="withdraw", source=source,
                               version=None, changed_fields=[]))
