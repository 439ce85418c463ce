"""Records of one site, the use cases: create, replace, read, list, history and withdraw.

Writes are planned and applied by services/writes.py (the same path as a batch); rows map to
records through services/record_rows.py.
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
from registry.core.record import canonical
from registry.db import transaction, unit_of_work, utcnow
from registry.errors import BadRequest, Conflict, NotFound, PreconditionFailed, RecordInvalid
from registry.models import AuditEntry, Record, RecordVersion, Tombstone
from registry.permissions import Action, authorize
from registry.services.record_rows import derived_from_row, record_from_row
from registry.services.tokens import Caller
from registry.services.writes import PlannedWrite, apply_writes, plan_write, retrying_races


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


def _checked_subject(subject_id: str, record: dict[str, Any]) -> None:
    """Refuse a subject_id in the URL that breaks the identifier rules, or that differs from
    the one repeated in the body."""
    try:
        check_subject_id(subject_id)
    except ValidationError as error:
        raise RecordInvalid(problems_to_list({"subject_id": error.messages})) from None
    sent = record.get("subject_id")
    if sent is not None and sent != subject_id:
        raise RecordInvalid([{"field": "subject_id", "code": "not_allowed_here",
                              "message": "must equal the subject_id of the URL, or be left out"}])


def _view_of(plan: PlannedWrite) -> dict[str, Any]:
    now = utcnow()
    if plan.existing is None:
        return record_view(plan.subject_id, plan.record, plan.derived, 1, now, now)
    updated_at = now if plan.outcome == "updated" else plan.existing.updated_at
    return record_view(plan.subject_id, plan.record, plan.derived, plan.version,
                       plan.existing.created_at,
                       updated_at)


def _write_one(caller: Caller, subject_id: str, record: dict[str, Any], source: str,
               check: Callable[[PlannedWrite], None]) -> tuple[str, dict[str, Any]]:
    """Write one record after `check` has accepted its plan; a withdrawn subject is a 409."""

    def work() -> tuple[str, dict[str, Any]]:
        with transaction() as connection:
            plan = plan_write(connection, caller.site_id, subject_id, record)
            if plan.outcome == "rejected":
                raise Conflict("subject_withdrawn", "this subject was withdrawn and may not be "
                                                    "submitted again")
            check(plan)
            apply_writes(connection, caller, [plan], source)
            return plan.outcome, _view_of(plan)

    return retrying_races(work)


def put_record(caller: Caller, subject_id: str, record: dict[str, Any], *,
               if_match: VersionCondition | None = None,
               if_none_match: VersionCondition | None = None,
               source: str = "api") -> tuple[str, dict[str, Any]]:
    """Create or replace a record (idempotent) from validated fields: returns the outcome and
    the stored record. `if_match` must name the current version; `if_none_match` must not
    (`*`: the record must not exist yet)."""
    authorize(caller.role, Action.WRITE_RECORDS)
    _checked_subject(subject_id, record)

    def check(plan: PlannedWrite) -> None:
        current = None if plan.existing is None else plan.existing.version
        if if_match is not None and not if_match.names(current):
            raise PreconditionFailed("If-Match does not name the current version; GET the "
                                     "record and apply the change again")
        if if_none_match is not None and if_none_match.names(current):
            raise PreconditionFailed("If-None-Match names the current version (or is * and the "
                                     "record exists)")

    return _write_one(caller, subject_id, canonical(record), source, check)


def create_record(caller: Caller, record: dict[str, Any], *, source: str = "api"
                  ) -> dict[str, Any]:
    """Create a record, from validated fields, that must not exist yet."""
    authorize(caller.role, Action.WRITE_RECORDS)

    def check(plan: PlannedWrite) -> None:
        if plan.outcome != "created":
            raise Conflict("record_exists", "a record with this subject_id exists; use PUT "
                                            "to replace it")

    return _write_one(caller, record["subject_id"], canonical(record), source, check)[1]


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
    """Withdrawal of consent: erase the record and all its versions, keep a tombstone."""
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
        session.execute(delete(Record).where(Record.id == record.id))
        session.add(Tombstone(site_id=caller.site_id, subject_id=subject_id, reason=reason))
        session.add(AuditEntry(token_id=caller.token_id, site_id=caller.site_id,
                               subject_id=subject_id, action="withdraw", source=source,
                               version=None, changed_fields=[]))
