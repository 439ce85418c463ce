"""A site's own records as its data manager sees them in the console: how many, when and from
where each was last updated, which are due for follow-up, which were withdrawn and why, how
complete the optional fields are, and one record with its history.

Every query here is bound to the caller's site (`_site_of`): a submitter never sees another
site's numbers or records, and another site's record answers exactly like one that does not
exist (404). Authorisation is the permission table's (READ_RECORDS), as for the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from registry.core.dictionary import record_dictionary
from registry.core.fields import CodeList, is_acceptable_subject_id
from registry.core.record import SUBMITTED_FIELDS, RecordFieldsSchema, remission_threshold
from registry.core.rules import RULES, AllOf, Condition, Is, OnlyWhen, RequiredWhen, Values, \
    required_when, shown_when
from registry.core.vocabulary import SOURCES, WITHDRAWAL_REASONS
from registry.db import unit_of_work, utcnow
from registry.errors import BadRequest, Forbidden, NotFound
from registry.models import Record, RecordVersion, Site, Tombstone
from registry.permissions import Action, authorize
from registry.services.intake.records import get_record
from registry.services.access.tokens import Caller

RECORDS = Record.__table__
# The orders of the records list, each with its SQL ordering (a tie is broken by the pseudonym).
RECORD_ORDERS = {
    "recent": (Record.updated_at.desc(), Record.subject_id),
    "oldest": (Record.updated_at, Record.subject_id),
    "pseudonym": (Record.subject_id,),
}
MAX_FOLLOW_UP_DUE_DAYS = 3650


def _site_of(caller: Caller) -> int:
    """The caller's site, after the permission check: every query below is bound to it."""
    authorize(caller.role, Action.READ_RECORDS)
    if caller.site_id is None:  # a submitter token always has a site; refuse rather than guess
        raise Forbidden("this token belongs to no site")
    return caller.site_id


def _last_version() -> Any:
    """Record joined to its current version (where the last change came from)."""
    return RECORDS.outerjoin(RecordVersion.__table__, and_(
        RecordVersion.record_id == Record.id, RecordVersion.version == Record.version))


# --- completeness --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measured:
    """An optional field whose completeness is measured, and the records it belongs to."""

    name: str
    belongs: Condition | None  # None: every record


def _made_required(name: str) -> bool:
    """Whether a rule of the table makes the field required wherever it applies."""
    return any(rule.field == name and (isinstance(rule, RequiredWhen)
                                       or (isinstance(rule, OnlyWhen) and rule.required))
               for rule in RULES)


def completeness_fields() -> tuple[list[Measured], list[dict[str, str]]]:
    """The optional fields whose blank means "not known" (measured), and the others with why
    they are not: a list (empty means none) or a field the rules require where it applies."""
    measured: list[Measured] = []
    skipped: list[dict[str, str]] = []
    for name, field in RecordFieldsSchema().fields.items():
        if field.required:
            continue
        if isinstance(field, CodeList):
            skipped.append({"name": name, "why": "a list: an empty list means none, so a blank "
                                                 "is not missing"})
        elif _made_required(name):
            skipped.append({"name": name, "why": f"the rules decide it ({required_when(name)}), "
                                                 "so every accepted record has it where it "
                                                 "applies"})
        else:
            measured.append(Measured(name, shown_when(name)))
    return measured, skipped


def _holds(condition: Condition) -> ColumnElement[bool]:
    """A rule's condition as SQL over the records table."""
    if isinstance(condition, Is):
        return RECORDS.c[condition.field].in_(condition.values)
    if isinstance(condition, AllOf):
        return and_(*(_holds(part) for part in condition.conditions))
    raise TypeError(f"no SQL for {type(condition).__name__}")


def _completeness(session: Any, site_id: int) -> dict[str, Any]:
    measured, skipped = completeness_fields()
    columns = []
    for entry in measured:
        applies = _holds(entry.belongs) if entry.belongs is not None else None
        filled = RECORDS.c[entry.name].is_not(None)
        columns.append(func.sum(case((applies, 1), else_=0)) if applies is not None
                       else func.count())
        columns.append(func.sum(case((and_(applies, filled) if applies is not None else filled,
                                      1), else_=0)))
    counts = session.execute(select(*columns).select_from(RECORDS)
                             .where(RECORDS.c.site_id == site_id)).one() if columns else ()
    fields = []
    for index, entry in enumerate(measured):
        applicable, filled = int(counts[2 * index] or 0), int(counts[2 * index + 1] or 0)
        fields.append({"name": entry.name, "applies_when": entry.belongs.text()
                       if entry.belongs is not None else None,
                       "applicable": applicable, "filled": filled,
                       "share": filled / applicable if applicable else None})
    return {"fields": fields, "not_measured": skipped}


# --- the site's page -----------------------------------------------------------------------------

def site_summary(caller: Caller, *, follow_up_due_days: int, due_listed: int = 50,
                 now: datetime | None = None) -> dict[str, Any]:
    """The caller's site at a glance: records, where their last updates came from, those not
    updated for more than `follow_up_due_days` (oldest first, the first `due_listed`),
    withdrawals with their reasons, and completeness per optional field."""
    site_id = _site_of(caller)
    if not 1 <= follow_up_due_days <= MAX_FOLLOW_UP_DUE_DAYS:
        raise BadRequest("the follow-up period is out of range", errors=[{
            "field": "due_after_days", "code": "out_of_range",
            "message": f"must be a whole number of days from 1 to {MAX_FOLLOW_UP_DUE_DAYS}"}])
    now = now or utcnow()
    due_before = now - timedelta(days=follow_up_due_days)
    mine = Record.site_id == site_id
    with unit_of_work(read_only=True) as session:
        site = session.get(Site, site_id)
        count, newest, oldest = session.execute(
            select(func.count(), func.max(Record.updated_at), func.min(Record.updated_at))
            .where(mine)).one()
        by_source = dict(session.execute(
            select(RecordVersion.source, func.count()).select_from(_last_version())
            .where(mine).group_by(RecordVersion.source)).all())
        due_count = session.scalar(select(func.count()).select_from(RECORDS)
                                   .where(mine, Record.updated_at < due_before))
        due = session.execute(
            select(Record.subject_id, Record.updated_at, RecordVersion.source)
            .select_from(_last_version()).where(mine, Record.updated_at < due_before)
            .order_by(Record.updated_at, Record.subject_id).limit(due_listed)).all()
        withdrawn = session.execute(
            select(Tombstone.subject_id, Tombstone.withdrawn_at, Tombstone.reason)
            .where(Tombstone.site_id == site_id)
            .order_by(Tombstone.withdrawn_at.desc(), Tombstone.subject_id)).all()
        completeness = _completeness(session, site_id)
    return {
        "site": {"code": site.code, "name": site.name},
        "record_count": count, "newest_update": newest, "oldest_update": oldest,
        # Every source of the vocabulary, those without records too; one the vocabulary no
        # longer names (None: a record without versions) is kept rather than hidden.
        "last_update_sources": [{"source": source, "count": by_source.get(source, 0)}
                                for source in (*SOURCES, *sorted(
                                    (s for s in by_source if s not in SOURCES), key=str))],
        "follow_up": {"days": follow_up_due_days, "due_before": due_before, "count": due_count,
                      "records": [{"subject_id": subject, "updated_at": updated,
                                   "days_since": (now - updated).days, "source": source}
                                  for subject, updated, source in due]},
        "withdrawals": [{"subject_id": subject, "withdrawn_at": when, "reason": reason}
                        for subject, when, reason in withdrawn],
        "completeness": completeness,
    }


def list_site_records(caller: Caller, *, search: str = "", order: str = "recent",
                      page: int = 1, per_page: int = 50) -> dict[str, Any]:
    """A page of the caller's site's records with their last update (when, from where),
    optionally only pseudonyms containing `search` (case-insensitive)."""
    site_id = _site_of(caller)
    if order not in RECORD_ORDERS:
        raise BadRequest("unknown order", errors=[{
            "field": "order", "code": "invalid_choice",
            "message": "must be one of " + ", ".join(RECORD_ORDERS)}])
    page = max(page, 1)
    where = [Record.site_id == site_id]
    search = search.strip()
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(func.lower(Record.subject_id).like(f"%{escaped}%", escape="\\"))
    with unit_of_work(read_only=True) as session:
        total = session.scalar(select(func.count()).select_from(RECORDS).where(*where))
        rows = session.execute(
            select(Record.subject_id, Record.version, Record.created_at, Record.updated_at,
                   RecordVersion.source)
            .select_from(_last_version()).where(*where).order_by(*RECORD_ORDERS[order])
            .limit(per_page).offset((page - 1) * per_page)).all()
    return {"total": total, "page": page, "per_page": per_page,
            "pages": max(1, -(-total // per_page)), "search": search, "order": order,
            "records": [{"subject_id": subject, "version": version, "created_at": created,
                         "updated_at": updated, "source": source}
                        for subject, version, created, updated, source in rows]}


# --- one record ----------------------------------------------------------------------------------

def _changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields that differ between two stored versions (for the first: those given)."""
    if before is None:
        return [{"field": name, "old": None, "new": after.get(name)} for name in SUBMITTED_FIELDS
                if after.get(name) not in (None, [])]
    return [{"field": name, "old": before.get(name), "new": after.get(name)}
            for name in SUBMITTED_FIELDS if before.get(name) != after.get(name)]


def record_with_history(caller: Caller, subject_id: str) -> dict[str, Any]:
    """One of the caller's site's records: its values and derived fields with the dictionary's
    descriptions, and every version (when, from where, each changed field's old and new value),
    newest first. Another site's record, like a missing one, is a 404."""
    site_id = _site_of(caller)
    record = get_record(caller, subject_id)  # 404 for a record not of this site
    with unit_of_work(read_only=True) as session:
        versions = session.execute(
            select(RecordVersion.version, RecordVersion.created_at, RecordVersion.source,
                   RecordVersion.data)
            .join(Record, Record.id == RecordVersion.record_id)
            .where(Record.site_id == site_id, Record.subject_id == subject_id)
            .order_by(RecordVersion.version)).all()
    history, before = [], None
    for version, created_at, source, data in versions:
        history.append({"version": version, "created_at": created_at, "source": source,
                        "changes": _changes(before, data)})
        before = data
    fields = record_fields()
    values = Values(record, record)
    # Fields the rules keep out of this record (a stop day while maintenance is ongoing, ...).
    not_applicable = [entry["name"] for entry in fields
                      if (condition := shown_when(entry["name"])) is not None
                      and condition.holds(values) is False]
    return {"record": record, "history": history[::-1], "fields": fields,
            "not_applicable": not_applicable,
            "derived_fields": record_dictionary(remission_threshold())["derived_fields"]}


def record_fields() -> list[dict[str, Any]]:
    """The dictionary's entries of the submitted fields, in the record's order."""
    return [entry for entry in record_dictionary(remission_threshold())["fields"]
            if entry["name"] != "subject_id"]


def withdrawal_of(caller: Caller, subject_id: str) -> dict[str, Any]:
    """The tombstone of one of the caller's site's withdrawn subjects (404 if none)."""
    site_id = _site_of(caller)
    if not is_acceptable_subject_id(subject_id):
        raise NotFound("no record with this subject_id at your site")
    with unit_of_work(read_only=True) as session:
        found = session.execute(
            select(Tombstone.withdrawn_at, Tombstone.reason)
            .where(Tombstone.site_id == site_id, Tombstone.subject_id == subject_id)).first()
    if found is None:
        raise NotFound("no record with this subject_id at your site")
    return {"subject_id": subject_id, "withdrawn_at": found[0], "reason": found[1]}


def withdrawal_reasons() -> tuple[str, ...]:
    """The reasons a withdrawal may give, first the default."""
    return WITHDRAWAL_REASONS
