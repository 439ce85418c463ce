"""One run of registry-submit: read a spreadsheet, de-identify, validate, dry-run, submit, report.

The de-identification is the REDCap sync's own (registry.core.deidentify): the same site secret
gives the same patient the same subject id whichever tool sent it, dates become days from
met_dx_date and its year, and only the registry's fields are read. Records are validated
locally with the registry's rules (and its published inclusion threshold), then the whole file
is sent as a dry run, and only then are the records that would change written, in batches. A
record the registry already holds unchanged is not sent again, so a second run writes nothing.
The report lists rows, fields and rules, never a value or a local record id.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from registry.core.deidentify import build_record, subject_id
from registry.core.site_fields import ROW_WITHOUT_ID, SOURCE
from registry.site.redcap.config import SubmitConfig
from registry.site.redcap.sync import RunOutcome
from registry.site.registry_client import RegistryClient, RegistryFailure
from registry.site.submit.spreadsheet import Sheet, SpreadsheetError, read_spreadsheet

OUTCOMES = ("created", "updated", "unchanged", "invalid")


@dataclass
class SubmitReport(RunOutcome):
    """What a run did: counts per outcome and per-record lines (rows, field, rule)."""

    dry_run: bool
    file: str
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    counts: Counter = field(default_factory=Counter)
    records: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    columns_dropped: int = 0
    identifier_columns_dropped: int = 0

    def add(self, rows: list[int], subject: str | None, outcome: str, **details: Any) -> None:
        """Count one record's outcome and list it when there is something to say."""
        self.counts[outcome] += 1
        if outcome != "unchanged":
            self.records.append({"rows": rows, "subject_id": subject, "outcome": outcome,
                                 **details})

    def as_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return self.report_head(file=self.file) | {
            "columns_dropped": self.columns_dropped,
            "identifier_columns_dropped": self.identifier_columns_dropped,
            "counts": {outcome: self.counts[outcome] for outcome in OUTCOMES}
            | {"rows": self.counts["rows"], "records": self.counts["records"]},
            "records": self.records,
        }


def _local_problems(sheet: Sheet, config: SubmitConfig, report: SubmitReport,
                    min_remission_days: int) -> list[tuple[list[int], dict[str, Any]]]:
    """De-identify and validate every record; (rows, record) of the valid ones."""
    valid = []
    for number in sheet.rows_without_id:
        report.add([number], None, "invalid", refused_by="submit", errors=[dict(ROW_WITHOUT_ID)])
    for record_id, rows in sheet.rows_of.items():
        numbers = sheet.row_numbers[record_id]
        subject = subject_id(config.site_secret, record_id, config.subject_prefix)
        record, problems = build_record(rows, subject, min_remission_days)
        if record is None:
            report.add(numbers, subject, "invalid", refused_by="submit", errors=problems)
        else:
            valid.append((numbers, record))
    return valid


def _send(registry: RegistryClient, batch: list[tuple[list[int], dict[str, Any]]],
          dry_run: bool) -> list[dict[str, Any]]:
    return registry.submit([record for _, record in batch], dry_run=dry_run)


def run(path: Path, config: SubmitConfig, *, dry_run: bool = False,
        progress: bool = False) -> SubmitReport:
    """One run; never raises for a file or registry failure (the report says it)."""
    report = SubmitReport(dry_run=dry_run, file=path.name)
    registry = RegistryClient(config.registry_url, config.registry_token,
                              timeout=config.timeout_seconds, retries=config.retries,
                              backoff=config.backoff_seconds, source=SOURCE)
    try:
        sheet = read_spreadsheet(path, config.date_order)
        threshold = registry.min_remission_days()  # validate as the registry will
        report.columns_dropped = sheet.dropped_columns
        report.identifier_columns_dropped = sheet.dropped_identifier_columns
        report.counts["rows"] = sheet.rows_read
        report.counts["records"] = len(sheet.rows_of) + len(sheet.rows_without_id)
        valid = _local_problems(sheet, config, report, threshold)
        size = config.push_batch_size
        batches = [valid[start:start + size] for start in range(0, len(valid), size)]
        to_write: list[tuple[list[int], dict[str, Any]]] = []
        with tqdm(total=len(valid), unit="record", desc="dry run", disable=not progress) as bar:
            for batch in batches:
                for (rows, record), result in zip(batch, _send(registry, batch, True)):
                    outcome = result.get("outcome")
                    if outcome == "rejected":
                        report.add(rows, record["subject_id"], "invalid", refused_by="registry",
                                   errors=result.get("errors", []))
                    elif outcome == "unchanged" or dry_run:
                        details = {"changed_fields": sorted(result["changes"])} \
                            if outcome == "updated" else {}
                        report.add(rows, record["subject_id"], str(outcome), **details)
                    else:
                        to_write.append((rows, record))
                bar.update(len(batch))
        with tqdm(total=len(to_write), unit="record", desc="registry",
                  disable=not progress or dry_run) as bar:
            for start in range(0, len(to_write), size):
                batch = to_write[start:start + size]
                for (rows, record), result in zip(batch, _send(registry, batch, False)):
                    outcome = str(result.get("outcome"))
                    if outcome == "rejected":
                        report.add(rows, record["subject_id"], "invalid", refused_by="registry",
                                   errors=result.get("errors", []))
                    elif outcome == "updated":
                        report.add(rows, record["subject_id"], outcome,
                                   changed_fields=sorted(result["changes"]))
                    else:
                        report.add(rows, record["subject_id"], outcome)
                bar.update(len(batch))
    except (SpreadsheetError, RegistryFailure) as error:
        report.failure = str(error)
    except Exception as error:  # noqa: BLE001 - a bug must still end in a report
        # Only the kind of error: its message could quote a value.
        report.failure = f"internal error ({type(error).__name__}); nothing more was sent"
    return report


def write_report(report: SubmitReport, path: Path | None, state_dir: Path) -> Path:
    """Write the JSON report (to `path`, or state_dir/reports/submit-<time>.json)."""
    if path is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = state_dir / "reports" / f"submit-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return path
