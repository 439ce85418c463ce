"""Batches: many records in one request, with a dry run and an all-or-nothing mode."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from registry.db import unit_of_work
from registry.errors import BatchRejected, PayloadTooLarge
from registry.schemas.fields import check_subject_id
from registry.services.records import (
    PlannedWrite, apply_writes, plan_writes, rejected, retrying_races, validate_record,
)
from registry.services.tokens import Caller

OUTCOMES = ("created", "updated", "unchanged", "rejected")


def _printable_subject(raw: Any) -> str | None:
    """The subject_id of a submitted record, if it is one that may be repeated back."""
    subject_id = raw.get("subject_id") if isinstance(raw, dict) else None
    try:
        check_subject_id(subject_id)
    except ValidationError:
        return None
    return subject_id


def submit_batch(caller: Caller, records: list[Any], *, dry_run: bool, atomic: bool,
                 max_batch: int, source: str = "api") -> dict[str, Any]:
    """Validate every record, decide its outcome, and write the valid ones in one transaction
    (none of them when `dry_run`, or when `atomic` and anything was rejected)."""
    if len(records) > max_batch:
        raise PayloadTooLarge(f"a batch holds at most {max_batch} records; split it")
    early: list[PlannedWrite] = []
    valid: list[tuple[int, str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, raw in enumerate(records):
        subject_id = _printable_subject(raw)
        if subject_id is not None and subject_id in seen:
            early.append(rejected(index, subject_id, [{
                "field": "subject_id", "code": "duplicate_in_batch",
                "message": "the same subject_id appears earlier in this batch"}]))
            continue
        if subject_id is not None:
            seen.add(subject_id)
        record, errors = validate_record(raw)
        if errors:
            early.append(rejected(index, subject_id, errors))
        else:
            valid.append((index, subject_id, record))

    def work() -> dict[str, Any]:
        with unit_of_work() as session:
            plans = plan_writes(session, caller.site_id, valid, lock=not dry_run) if valid else []
            plans = sorted(early + plans, key=lambda plan: plan.index)
            summary = {outcome: 0 for outcome in OUTCOMES}
            for plan in plans:
                summary[plan.outcome] += 1
            results = [plan.result() for plan in plans]
            if atomic and summary["rejected"]:
                raise BatchRejected(
                    f"{summary['rejected']} of {len(plans)} records were rejected",
                    dry_run=dry_run, atomic=atomic, summary=summary, results=results)
            if not dry_run:
                apply_writes(session, caller, plans, source)
            return {"dry_run": dry_run, "atomic": atomic, "summary": summary,
                    "results": results}

    return retrying_races(work)
