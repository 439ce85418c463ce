"""Batches: many records in one request, with a dry run and an all-or-nothing mode."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.db import unit_of_work
from registry.errors import BatchRejected, PayloadTooLarge
from registry.core.fields import check_subject_id
from registry.models import Record
from registry.permissions import Action, authorize
from registry.core.record import validate_record
from registry.services.intake.writes import (
    PlannedWrite, apply_writes, plan_writes, rejected, retrying_races, rules_in_force,
    submission_digest,
)
from registry.services.access.tokens import Caller

OUTCOMES = ("created", "updated", "unchanged", "rejected")


def _printable_subject(raw: Any) -> str | None:
    """The subject_id of a submitted record, if it is one that may be repeated back."""
    subject_id = raw.get("subject_id") if isinstance(raw, dict) else None
    try:
        check_subject_id(subject_id)
    except ValidationError:
        return None
    return subject_id


def _resent_unchanged(session: Session, site_id: int, digests: dict[str, str]
                      ) -> dict[str, int]:
    """Subjects whose stored record came from exactly this submission: subject -> version."""
    if not digests:
        return {}
    stored = session.execute(select(Record.subject_id, Record.submission_digest, Record.version)
                             .where(Record.site_id == site_id,
                                    Record.subject_id.in_(list(digests))))
    return {subject_id: version for subject_id, digest, version in stored
            if digest is not None and digest == digests[subject_id]}


def submit_batch(caller: Caller, records: list[Any], *, dry_run: bool, atomic: bool,
                 max_batch: int, source: str = "api") -> dict[str, Any]:
    """Validate every record, decide its outcome, and write the valid ones in one transaction
    (none of them when `dry_run`, or when `atomic` and anything was rejected).

    A record identical to the submission its stored version came from is unchanged; it is
    recognised by digest, without validating or comparing it field by field again, and
    confirmed under the write's locks, so that a subject withdrawn meanwhile is rejected
    (subject_withdrawn), never answered unchanged."""
    authorize(caller.role, Action.WRITE_RECORDS)
    if len(records) > max_batch:
        raise PayloadTooLarge(f"a batch holds at most {max_batch} records; split it")
    subjects = [_printable_subject(raw) for raw in records]
    rules = rules_in_force()
    digests = {subject_id: submission_digest(raw, rules)
               for subject_id, raw in zip(subjects, records)
               if subject_id is not None}
    with unit_of_work(read_only=True) as session:
        resent = _resent_unchanged(session, caller.site_id,
                                   {s: d for s, d in digests.items() if d is not None})

    early: list[PlannedWrite] = []
    valid: list[tuple[int, str, dict[str, Any] | None, str | None]] = []
    seen: set[str] = set()
    for index, (subject_id, raw) in enumerate(zip(subjects, records)):
        if subject_id is not None and subject_id in seen:
            early.append(rejected(index, subject_id, [{
                "field": "subject_id", "code": "duplicate_in_batch",
                "message": "the same subject_id appears earlier in this batch"}]))
            continue
        if subject_id is not None:
            seen.add(subject_id)
        if subject_id in resent:
            # Not validated again; confirmed under the write's locks (it may be withdrawn).
            valid.append((index, subject_id, None, digests[subject_id]))
            continue
        record, errors = validate_record(raw)
        if errors:
            early.append(rejected(index, subject_id, errors))
        else:
            valid.append((index, subject_id, record, digests.get(subject_id)))

    def work() -> dict[str, Any]:
        with unit_of_work() as session:
            connection = session.connection()
            plans = plan_writes(connection, caller.site_id, valid, lock=not dry_run) \
                if valid else []
            stale = [plan for plan in plans if plan.outcome == "stale"]
            if stale:  # changed since the first read: validate and plan them as any record
                plans = [plan for plan in plans if plan.outcome != "stale"]
                again: list[tuple[int, str, dict[str, Any] | None, str | None]] = []
                for plan in stale:
                    record, errors = validate_record(records[plan.index])
                    if errors:
                        plans.append(rejected(plan.index, plan.subject_id, errors))
                    else:
                        again.append((plan.index, plan.subject_id, record, plan.digest))
                plans += plan_writes(connection, caller.site_id, again, lock=not dry_run) \
                    if again else []
            plans = sorted(early + plans, key=lambda plan: plan.index)
            summary = {outcome: 0 for outcome in OUTCOMES}
            for plan in plans:
                summary[plan.outcome] += 1
            if atomic and summary["rejected"]:
                # Nothing is written: no record may claim an outcome it did not have.
                unwritten = len(plans) - summary["rejected"]
                raise BatchRejected(
                    f"{summary['rejected']} of {len(plans)} records were rejected; nothing "
                    "was written", dry_run=dry_run, atomic=atomic,
                    summary={**{outcome: 0 for outcome in OUTCOMES},
                             "rejected": summary["rejected"], "not_written": unwritten},
                    results=[plan.result(written=False) for plan in plans])
            results = [plan.result() for plan in plans]
            if not dry_run:
                apply_writes(connection, caller, plans, source)
            return {"dry_run": dry_run, "atomic": atomic, "summary": summary,
                    "results": results}

    return retrying_races(work)
