"""One run of registry-redcap-sync: read, de-identify, validate, push, withdraw, report.

A run reads everything it needs from REDCap before it sends anything, so a REDCap failure
leaves the registry untouched. The watermark (REDCap server time, kept in the state directory)
advances to the start of the run only when the run failed nowhere; records refused for their
content do not hold it back: they come back when they are edited (every edit is logged) and on
`--full`. Incremental runs look back `overlap_minutes` before the watermark (the log has minute
resolution); re-sending an unchanged record writes nothing.

What REDCap lists now decides between a change and a deletion: a record the log names as
deleted but REDCap lists again is read, and a record the log (or `dateRangeBegin`) names as
changed that the export does not return is deleted when REDCap no longer lists it (withdrawn
when it had reached the registry). Only a record REDCap lists that still does not come back
fails the run; the report names it by subject_id and the next incremental run asks again, so no
state needs `--full` to get past. A record renamed in REDCap leaves its old name nowhere in the
log (REDCap rewrites the earlier entries to the new name): the new name is read as a change, and
a registry record of the site that REDCap no longer lists and that holds exactly what the
renamed record holds is its old name, withdrawn; any other such record is reported as missing,
as `--full` does, not withdrawn.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from registry.core.deidentify import build_record, subject_id
from registry.core.record import validate_record
from registry.site.redcap.client import HASHED_MESSAGE, RedcapClient, RedcapFailure, looks_hashed
from registry.site.redcap.config import SyncConfig
from registry.core.redcap_dictionary import metadata_version, redcap_fields
from registry.site.registry_client import RegistryClient, RegistryFailure
from registry.core.record import DICTIONARY_VERSION

log = logging.getLogger("registry.site.redcap.sync")
WATERMARK_FORMAT = "%Y-%m-%d %H:%M:%S"
OUTCOMES = ("created", "updated", "unchanged", "invalid", "withdrawn", "not_in_registry",
            "not_exported")
EXIT_OK, EXIT_RECORDS_REFUSED, EXIT_FAILED = 0, 1, 2
RUN_STATUS = {EXIT_OK: "ok", EXIT_RECORDS_REFUSED: "records_refused", EXIT_FAILED: "failed"}


def exit_code_of(failure: str | None, counts: Counter) -> int:
    """A site tool's exit status: 0 all done, 1 some records refused, 2 the run failed."""
    if failure:
        return EXIT_FAILED
    return EXIT_RECORDS_REFUSED if counts["invalid"] else EXIT_OK


class RunOutcome:
    """What the site tools' run reports share (registry-redcap-sync, registry-submit): the exit
    status and the head of the JSON report. Needs `dry_run`, `started_at`, `failure`, `counts`."""

    dry_run: bool
    started_at: str
    failure: str | None
    counts: Counter

    @property
    def exit_code(self) -> int:
        """0 all done, 1 some records refused, 2 the run failed."""
        return exit_code_of(self.failure, self.counts)

    def report_head(self, **particular: Any) -> dict[str, Any]:
        """The report's common fields, with the tool's own (`particular`) after `dry_run`."""
        return {"status": RUN_STATUS[self.exit_code], "exit_code": self.exit_code,
                "dry_run": self.dry_run, **particular, "started_at": self.started_at,
                "finished_at": datetime.now(timezone.utc).isoformat(),
                "dictionary_version": DICTIONARY_VERSION, "failure": self.failure}


class SyncAborted(Exception):
    """The run cannot go on; the message says why and what to do."""


@dataclass
class Report(RunOutcome):
    """What a run did: counts per outcome and per-record lines without any value."""

    dry_run: bool
    mode: str
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    change_detection: str = ""
    deletions_detected: bool = False
    counts: Counter = field(default_factory=Counter)
    records: list[dict[str, Any]] = field(default_factory=list)
    missing_from_source: list[str] = field(default_factory=list)
    log_entries_not_understood: int = 0
    failure: str | None = None
    watermark: dict[str, Any] = field(default_factory=dict)

    def add(self, subject: str, outcome: str, **details: Any) -> None:
        """Count one record's outcome and list it when there is something to say."""
        self.counts[outcome] += 1
        if outcome != "unchanged":
            self.records.append({"subject_id": subject, "outcome": outcome, **details})

    def as_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return self.report_head(mode=self.mode) | {
            "change_detection": self.change_detection,
            "deletions_detected": self.deletions_detected,
            "log_entries_not_understood": self.log_entries_not_understood,
            "watermark": self.watermark,
            "counts": {outcome: self.counts[outcome] for outcome in OUTCOMES} | {
                "read": self.counts["read"], "missing_from_source": len(self.missing_from_source)},
            "records": self.records, "missing_from_source": self.missing_from_source,
        }


class State:
    """The state directory: the watermark, and a lock so that two runs never overlap."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"

    def lock(self) -> Any:
        """Hold the directory's lock for the run (a second run aborts at once)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(self.directory / "sync.lock", "w")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SyncAborted("another registry-redcap-sync run holds the state directory")
        return handle

    def watermark(self) -> datetime | None:
        """The REDCap server time up to which every change was synced."""
        if not self.path.exists():
            return None
        text = json.loads(self.path.read_text()).get("watermark")
        return datetime.strptime(text, WATERMARK_FORMAT) if text else None

    def save(self, watermark: datetime) -> None:
        """Advance the watermark (written atomically)."""
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"watermark": watermark.strftime(WATERMARK_FORMAT)}))
        os.replace(temporary, self.path)


def check_dictionary(metadata: list[dict[str, Any]]) -> None:
    """Abort unless the project uses this registry's dictionary version and has its fields."""
    version = metadata_version(metadata)
    if version != DICTIONARY_VERSION:
        raise SyncAborted(
            f"the REDCap project holds registry dictionary version {version or '(none)'}, this "
            f"sync needs {DICTIONARY_VERSION}: import the current dictionary "
            "(GET /api/v1/dictionary/redcap.csv) into the project")
    present = {row.get("field_name") for row in metadata}
    missing = [field.name for field in redcap_fields() if field.name not in present]
    if missing:
        raise SyncAborted("the REDCap project lacks registry fields: " + ", ".join(missing))


def _changed_records(client: RedcapClient, report: Report, since: datetime | None
                     ) -> tuple[list[str], list[str], list[str]]:
    """(record ids to read, record ids deleted at the source, record ids given by a rename),
    as REDCap lists them now."""
    if since is None:
        report.change_detection = "full"
        return client.record_ids(), [], []
    try:
        found = client.record_log(since)
    except RedcapFailure as failure:
        if failure.status not in (400, 401, 403):
            raise
        log.warning("no logging right: changes from dateRangeBegin, deletions not detected")
        report.change_detection = "dateRangeBegin"
        return client.record_ids(since), [], []
    report.change_detection, report.deletions_detected = "logging", True
    report.log_entries_not_understood = found.not_understood
    if found.not_understood:
        log.warning("%d logging entries name no record in a form this sync knows",
                    found.not_understood)
    if not found.deleted:
        return found.changed, [], found.renamed
    listed = _listed(client)  # a record deleted, then created again under its id
    return (found.changed + [record for record in found.deleted if record in listed],
            [record for record in found.deleted if record not in listed], found.renamed)


def _read(client: RedcapClient, config: SyncConfig, record_ids: list[str], report: Report,
          progress: bool, min_remission_days: int | None = None
          ) -> tuple[list[dict[str, Any]], list[str]]:
    """(valid records to send, record ids REDCap did not return): export, assemble,
    de-identify and validate every record.

    Each exported batch is turned into records at once, so the raw rows (with their dates)
    never pile up in memory."""
    to_send = []
    not_returned: list[str] = []
    with tqdm(total=len(record_ids), unit="record", desc="REDCap", disable=not progress) as bar:
        for missing, rows in client.export(record_ids):
            not_returned += missing
            rows_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                rows_of[str(row[client.id_field])].append(row)
            for record_id, record_rows in rows_of.items():
                subject = subject_id(config.site_secret, record_id, config.subject_prefix)
                record, problems = build_record(record_rows, subject, min_remission_days)
                if record is None:
                    report.add(subject, "invalid", errors=problems, refused_by="sync")
                else:
                    to_send.append(record)
            report.counts["read"] += len(rows_of)
            bar.update(len(rows_of) + len(missing))
    return to_send, not_returned


def _listed(client: RedcapClient) -> set[str]:
    """Every record id REDCap lists now (hashed ids abort: they would read as all deleted)."""
    listed = client.record_ids()
    if looks_hashed(listed):
        raise SyncAborted(HASHED_MESSAGE)
    return set(listed)


def _gone(client: RedcapClient, config: SyncConfig, report: Report,
          not_returned: list[str]) -> list[str]:
    """The records among those the export did not return that REDCap no longer lists (deleted
    since the log or the list named them); raises when REDCap still lists any of them."""
    if not not_returned:
        return []
    listed = _listed(client)
    stuck = [record for record in not_returned if record in listed]
    if stuck:
        subjects = [subject_id(config.site_secret, record, config.subject_prefix)
                    for record in stuck]
        for subject in subjects:
            report.add(subject, "not_exported", reason="listed_by_redcap_but_not_exported")
        raise RedcapFailure(
            f"record export: {len(stuck)} record(s) that REDCap lists did not come back, even "
            f"when asked for again (subject_id {', '.join(subjects)}); nothing was sent, and the "
            "next run asks for them again")
    return not_returned


# What GET /records adds to the submitted fields of a record.
_STORED_ONLY = ("subject_id", "derived", "version", "created_at", "updated_at")


def _content(record: dict[str, Any]) -> dict[str, Any]:
    """The submitted fields of a record, without its subject_id and blank fields."""
    return {key: value for key, value in record.items()
            if key not in _STORED_ONLY and value not in (None, [])}


def _withdraw_renamed(client: RedcapClient, config: SyncConfig, registry: RegistryClient,
                      report: Report, renamed: list[str], to_send: list[dict[str, Any]],
                      threshold: int, dry_run: bool) -> None:
    """Withdraw the old names of records renamed in REDCap. An old name is a registry record of
    this site that REDCap no longer lists and that holds exactly what a renamed record holds
    now; any other record REDCap no longer lists went another way (deleted together with its
    logging, or out of sight of a token limited to one Data Access Group) and is reported,
    not withdrawn."""
    current = {subject_id(config.site_secret, record_id, config.subject_prefix)
               for record_id in _listed(client)}
    orphans = {subject: _content(record) for subject, record in registry.records().items()
               if subject not in current}
    if not orphans:
        return
    sent = {record["subject_id"]: record for record in to_send}
    renamed_contents = []
    for record_id in renamed:
        record = sent.get(subject_id(config.site_secret, record_id, config.subject_prefix))
        canonical = validate_record(record, threshold)[0] if record else None
        if canonical:
            renamed_contents.append(_content(canonical))
    for subject, content in sorted(orphans.items()):
        if content in renamed_contents:
            renamed_contents.remove(content)  # one old name per renamed record
            held = registry.withdraw(subject, dry_run=dry_run)
            report.add(subject, "withdrawn" if held else "not_in_registry",
                       reason="renamed_at_source")
        else:
            report.missing_from_source.append(subject)
    if report.missing_from_source:
        log.warning("%d registry records are no longer listed by REDCap and are not the old name "
                    "of a renamed record: reported, not withdrawn",
                    len(report.missing_from_source))


def _push(registry: RegistryClient, config: SyncConfig, records: list[dict[str, Any]],
          report: Report, dry_run: bool, progress: bool) -> None:
    size = config.push_batch_size
    with tqdm(total=len(records), unit="record", desc="registry", disable=not progress) as bar:
        for start in range(0, len(records), size):
            batch = records[start:start + size]
            for result in registry.submit(batch, dry_run=dry_run):
                subject = result.get("subject_id") or ""
                outcome = result.get("outcome")
                if outcome == "rejected":
                    report.add(subject, "invalid", errors=result.get("errors", []),
                               refused_by="registry")
                elif outcome == "updated":
                    report.add(subject, "updated", changed_fields=sorted(result["changes"]))
                else:
                    report.add(subject, str(outcome))
            bar.update(len(batch))


def run(config: SyncConfig, *, dry_run: bool = False, full: bool = False,
        progress: bool = False, redcap_client: RedcapClient | None = None) -> Report:
    """One sync run; never raises for a REDCap or registry failure (the report says it)."""
    state = State(config.state_dir)
    report = Report(dry_run=dry_run, mode="full" if full else "incremental")
    lock = state.lock()
    try:
        previous = state.watermark()
        report.watermark = {"previous": previous.strftime(WATERMARK_FORMAT) if previous
                            else None, "advanced": False}
        client = redcap_client or RedcapClient(
            config.redcap_api_url, config.redcap_api_token, timeout=config.timeout_seconds,
            retries=config.retries, backoff=config.backoff_seconds, pause=config.pause_seconds,
            batch_size=config.batch_size, timezone=config.redcap_timezone)
        registry = RegistryClient(config.registry_url, config.registry_token,
                                  timeout=config.timeout_seconds, retries=config.retries,
                                  backoff=config.backoff_seconds)
        try:
            _sync(config, client, registry, report, state, previous, full=full,
                  dry_run=dry_run, progress=progress)
        except (RedcapFailure, RegistryFailure, SyncAborted) as error:
            report.failure = str(error)
            log.error("sync failed: %s", error)
        except Exception as error:  # noqa: BLE001 - a bug must still end in a report
            # Only the kind of error: its message could quote a value.
            report.failure = f"internal error ({type(error).__name__}); nothing more was sent"
            log.error("sync failed with an internal error (%s)", type(error).__name__)
    finally:
        lock.close()
    return report


def _sync(config: SyncConfig, client: RedcapClient, registry: RegistryClient, report: Report,
          state: State, previous: datetime | None, *, full: bool, dry_run: bool,
          progress: bool) -> None:
    check_dictionary(client.metadata())
    started = client.server_now()
    since = None if full or previous is None else \
        previous - timedelta(minutes=config.overlap_minutes)
    record_ids, deleted, renamed = _changed_records(client, report, since)
    if looks_hashed(record_ids + deleted):
        raise SyncAborted(HASHED_MESSAGE)
    # Everything is read before anything is sent; records are checked under the registry's
    # published inclusion threshold, as registry-submit checks them.
    threshold = registry.min_remission_days()
    to_send, not_returned = _read(client, config, record_ids, report, progress, threshold)
    gone = _gone(client, config, report, not_returned)
    _push(registry, config, to_send, report, dry_run, progress)
    if full:
        # Reported, not withdrawn: a full run reconciles, it does not act on an absence.
        current = {subject_id(config.site_secret, record_id, config.subject_prefix)
                   for record_id in record_ids if record_id not in gone}
        report.missing_from_source = sorted(registry.subjects() - current)
    else:
        for record_id in deleted + gone:
            subject = subject_id(config.site_secret, record_id, config.subject_prefix)
            held = registry.withdraw(subject, dry_run=dry_run)
            report.add(subject, "withdrawn" if held else "not_in_registry",
                       reason="deleted_at_source")
        if renamed:
            _withdraw_renamed(client, config, registry, report, renamed, to_send, threshold,
                              dry_run)
    report.watermark["new"] = started.strftime(WATERMARK_FORMAT)
    if not dry_run:
        state.save(started)
        report.watermark["advanced"] = True


def write_report(report: Report, path: Path | None, state_dir: Path) -> Path:
    """Write the JSON report (to `path`, or state_dir/reports/sync-<time>.json)."""
    if path is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = state_dir / "reports" / f"sync-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return path
