"""Releases (privacy.md 2.1): cutting one, listing them, finding the one a question is asked
of, the records a release holds, and erasing a withdrawn patient from every release.

Coordinators never query the live table: every aggregate and analysis is computed from a
release, a frozen state of the data, so the same question on the same release always gets the
same answer. A release is refused unless at least k records were created, changed or withdrawn
since the previous one (no two releases differ by one patient), and unless the previous one is
at least REGISTRY_RELEASE_MIN_DAYS old.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, exists, func, insert, literal, select, text, update
from sqlalchemy.orm import Session

from registry.db import transaction, unit_of_work, utcnow
from registry.errors import BadRequest, Conflict
from registry.models import (
    AuditEntry, Record, Release, Tombstone, in_release, release_records,
)
from registry.permissions import Action, allowed, authorize
from registry.services.window import release_columns
from registry.services.window.disclosure import Policy, protect
from registry.services.access.tokens import Caller

RECORDS = Record.__table__
RELEASED = release_records
HOW_TO_CUT = ("a steward cuts one with `registry releases cut` or POST /api/v1/releases")
# Columns copied from a record into its released state, besides the key and the range.
_COPIED = [column.name for column in RELEASED.columns
           if column.name not in ("id", "record_id", "record_key", "valid_from", "valid_until")]


class ReleaseRefused(Conflict):
    """A release that privacy.md 2.1 does not allow yet (too few changes, or too soon)."""


def release_view(release: Release, caller: Caller | None = None,
                 policy: Policy | None = None) -> dict[str, Any]:
    """What the API and the command line show of a release. A coordinator sees the record
    count as disclosure control publishes the total of an unfiltered table of the release (the
    same records, so the same number), and not the number of changes: an exact count would
    turn the difference of two releases into an exact count of the patients between them."""
    view = {"id": release.id, "cut_at": release.cut_at, "note": release.note,
            "record_count": release.record_count, "changes": release.changes}
    if caller is not None and not allowed(caller.role, Action.READ_EXACT_RELEASE_COUNTS):
        assert policy is not None
        view["record_count"] = protect([release.record_count], [release.record_key_sum], [],
                                       policy)[0]
        view["changes"] = None
    return view


def list_releases(caller: Caller | None = None, policy: Policy | None = None
                  ) -> list[dict[str, Any]]:
    """Every release, newest first (for a coordinator, with protected numbers)."""
    if caller is not None:
        authorize(caller.role, Action.READ_RELEASES)
    with unit_of_work(read_only=True) as session:
        return [release_view(r, caller, policy) for r in session.scalars(
            select(Release).order_by(Release.id.desc()))]


def latest_release(caller: Caller) -> dict[str, Any] | None:
    """The newest release's id, cut time and note (None before the first), for pages that
    name the release their answers come from by default."""
    authorize(caller.role, Action.READ_RELEASES)
    with unit_of_work(read_only=True) as session:
        release = newest_release(session)
        return None if release is None else {"id": release.id, "cut_at": release.cut_at,
                                             "note": release.note}


def newest_release(session: Session) -> Release | None:
    """The newest release, if any."""
    return session.scalar(select(Release).order_by(Release.id.desc()).limit(1))


def resolve_release(session: Session, release_id: int | None) -> Release:
    """The release a question is asked of: the one named, or the newest. 409 when none was cut
    yet (saying how to cut one), 400 for an id that is not a release."""
    if release_id is None:
        release = newest_release(session)
        if release is None:
            raise Conflict("no_release", "no release has been cut yet, and answers are computed "
                                         "from releases only: " + HOW_TO_CUT)
        return release
    release = session.get(Release, release_id)
    if release is None:
        message = "no release has this id; GET /api/v1/releases lists them"
        raise BadRequest(f"release: {message}", errors=[
            {"field": "release", "code": "unknown_release", "message": message}])
    return release


def next_release_earliest(release: Release | None, policy: Policy) -> datetime:
    """When the next release may be cut at the earliest (the time rule alone)."""
    if release is None:
        return utcnow()
    return release.cut_at + timedelta(days=policy.release_min_days)


def release_records_of(release_id: int) -> Select:
    """The records release `release_id` holds, as a selectable for aggregates and analyses.

    One row per record: `record_id`, `site_id`, `version`, `record_key` (the record's fixed
    perturbation key: sum these per count for services.disclosure.protect) and every clinical
    column of the record, submitted and derived, under the names of the records table. Use it
    as `.subquery()` in a FROM, e.g. select(func.count()).select_from(release_records_of(r)
    .subquery()). Never a subject id."""
    return select(RELEASED).where(in_release(release_id))


def _changes_since(session: Session, previous: Release | None) -> int:
    """Records created, changed or withdrawn since `previous` (every record, if none)."""
    current = RELEASED.alias("current_state")
    unchanged = exists().where(current.c.record_id == RECORDS.c.id,
                               current.c.valid_until.is_(None),
                               current.c.version == RECORDS.c.version)
    written = session.scalar(select(func.count()).select_from(RECORDS).where(~unchanged)) or 0
    if previous is None:
        return written
    # Withdrawn since the previous release, having been created before it (so it held them).
    created_before = exists().where(AuditEntry.site_id == Tombstone.site_id,
                                    AuditEntry.subject_id == Tombstone.subject_id,
                                    AuditEntry.action == "create",
                                    AuditEntry.occurred_at <= previous.cut_at)
    withdrawn = session.scalar(select(func.count()).select_from(Tombstone).where(
        Tombstone.withdrawn_at > previous.cut_at, created_before)) or 0
    return written + withdrawn


def _lock(session: Session) -> None:
    """Hold writers of records (and withdrawals) off while a release is cut, so that it is one
    consistent state; they wait, then go on (SQLite: the cut's transaction holds the write lock
    already). The first release of a large registry takes seconds (benchmarks/aggregates.py):
    it may outlast the per-request statement timeout, which is lifted for the cut."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL statement_timeout = 0"))
        session.execute(text("LOCK TABLE records, releases IN SHARE ROW EXCLUSIVE MODE"))


def cut_release(caller: Caller | None, note: str | None, policy: Policy) -> dict[str, Any]:
    """Cut a release of the registry's current data (privacy.md 2.1), or refuse with a clear
    409 saying which rule is not met yet."""
    if caller is not None:  # None: the operator's command line
        authorize(caller.role, Action.CUT_RELEASE)
    with unit_of_work() as session:
        _lock(session)
        previous = newest_release(session)
        now = utcnow()
        earliest = next_release_earliest(previous, policy)
        if previous is not None and now < earliest:
            days = math.ceil((earliest - now).total_seconds() / 86_400)
            raise ReleaseRefused(
                "release_too_soon",
                f"release {previous.id} was cut on {previous.cut_at:%Y-%m-%d %H:%M} UTC; "
                f"releases come at most one per {policy.release_min_days} days "
                f"(REGISTRY_RELEASE_MIN_DAYS), so the next may be cut from "
                f"{earliest:%Y-%m-%d %H:%M} UTC (in {days} days)")
        changes = _changes_since(session, previous)
        k = policy.min_cell_count
        if changes < k:
            since = f"since release {previous.id}" if previous else "in the registry"
            raise ReleaseRefused(
                "too_few_changes",
                f"{changes} records were created, changed or withdrawn {since}; a release "
                f"needs at least {k} (the minimum cell count), so that no two releases differ "
                "by fewer than k patients. Cut it once more records have been submitted")
        release = Release(cut_at=now, token_id=caller.token_id if caller else None,
                          note=note, record_count=0, record_key_sum=0, changes=changes)
        session.add(release)
        session.flush()
        _freeze(session, release.id)
        count, keys = session.execute(
            select(func.count(), func.coalesce(func.sum(RELEASED.c.record_key), 0))
            .where(in_release(release.id))).one()
        release.record_count, release.record_key_sum = count, int(keys)
        view = release_view(release)
    _refresh_statistics()
    # The columnar copy the analyses read, after the commit so that writers do not wait for
    # it (1.5 s at 100,000 records); without it, the first question writes it.
    release_columns.prepare(view["id"])
    return view


def _refresh_statistics() -> None:
    """Let the planner know the release states just written: every question reads them. Until
    autovacuum gets to it, PostgreSQL takes a fresh release for a few rows and sorts where it
    would hash (B4 at 100,000 records: 41-54 ms instead of 88-127 ms for the GROUP BY of a
    release); SQLite, without statistics, gathers the states through the index on
    valid_until instead of scanning the table (130 instead of 156 ms). After the commit, so
    that writers do not wait for it."""
    with transaction() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text(f"ANALYZE {RELEASED.name}"))


def _freeze(session: Session, release_id: int) -> None:
    """Close the ranges of states whose record changed, and add the records' current states
    (created or changed since the previous release) from this release on."""
    current = RELEASED.alias("current_state")
    changed = select(RECORDS.c.id).where(RECORDS.c.id == RELEASED.c.record_id,
                                         RECORDS.c.version != RELEASED.c.version).exists()
    session.execute(update(RELEASED).where(RELEASED.c.valid_until.is_(None), changed)
                    .values(valid_until=release_id))
    held = exists().where(current.c.record_id == RECORDS.c.id, current.c.valid_until.is_(None))
    session.execute(insert(RELEASED).from_select(
        ["record_id", "record_key", "valid_from", *_COPIED],
        select(RECORDS.c.id, RECORDS.c.cell_key,
               literal(release_id, type_=RELEASED.c.valid_from.type),
               *[RECORDS.c[name] for name in _COPIED]).where(~held)))


def erase_from_releases(session: Session, record_id: int) -> None:
    """Withdrawal of consent: erase every released state of the record, lower the record count
    of each release that held it, and delete those releases' columnar copies (the next
    question on one writes it again without the record; the law wins over reproducibility;
    the audit log shows the withdrawal)."""
    states = session.execute(select(RELEASED.c.valid_from, RELEASED.c.valid_until,
                                    RELEASED.c.record_key).where(
        RELEASED.c.record_id == record_id)).all()
    holding: list[int] = []
    for valid_from, valid_until, key in states:
        held = Release.id >= valid_from
        if valid_until is not None:
            held = and_(held, Release.id < valid_until)
        holding += session.scalars(update(Release).where(held).values(
            record_count=Release.record_count - 1, record_key_sum=Release.record_key_sum - key)
            .returning(Release.id)).all()
    session.execute(RELEASED.delete().where(RELEASED.c.record_id == record_id))
    release_columns.erase(session, holding)


def release_outlook(policy: Policy) -> dict[str, Any]:
    """What a steward needs before cutting: the newest release, how many records changed since
    it, how many a release needs (k), and from when the time rule allows the next one."""
    with unit_of_work(read_only=True) as session:
        previous = newest_release(session)
        changes = _changes_since(session, previous)
        earliest = next_release_earliest(previous, policy)
    return {"previous": previous.id if previous else None, "changes": changes,
            "needed": policy.min_cell_count, "min_days": policy.release_min_days,
            "earliest": earliest, "allowed": changes >= policy.min_cell_count
            and (previous is None or utcnow() >= earliest)}
