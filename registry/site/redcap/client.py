"""The site's REDCap, read through PyCap with timeouts, retries, batches and strict answers.

Only 5xx answers, timeouts and dropped connections are retried (with exponential backoff); a
400/401/403 is final. Any answer that is not the JSON expected (an HTML page with status 200,
an error object, a list of something else) is a failure. REDCap's own error messages are passed
on with every word that holds a digit blanked out, since they can quote a record id.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import redcap
import requests

T = TypeVar("T")
HASHED_ID = re.compile(r"^[0-9a-f]{32}$")
HASHED_MESSAGE = (
    "REDCap returned hashed record ids: the token's user has de-identified export rights. Give "
    "the sync's REDCap user 'Full Data Set' export rights; the sync de-identifies at the site")
# Every record-level action REDCap's logging export (content=log, logtype=record) writes, newest
# entry first, as "[<document>] <verb> <record|Response> [(how)...] <record id> [(event (arm))]".
# REDCap composes the action in Logging::renderLogRow (REDCap 13.6.1 Classes/Logging.php, a copy
# is public in github.com/dougc333/test_redcap) from the entry's event (INSERT, UPDATE, DELETE,
# DOC_UPLOAD, DOC_DELETE), its description and page, and the words of LanguageUpdater/English.ini
# (reporting_27 "Create record", reporting_25 "Update record", reporting_30 "Delete record",
# reporting_46 "Create Response", reporting_47 "Update Response", survey_1332 "Deleted Response",
# reporting_39 "Uploaded Document", reporting_40 "Deleted Document"), then the entry's record
# (pk) and, in a longitudinal project, the event. Each form is listed with where it was seen;
# `parse_log_entry` reads them all (tests/test_redcap_sync.py runs every example through it, and
# the fake REDCap of the tests writes them). Entries of the logtype=record export are only those
# of REDCap's data table (Logging::setEventFilterSql): locking and e-signatures ("Lock/Unlock
# Record", logtype lock_record), field comments and data queries (Manage/Design entries) change
# no value and never appear in it.
LOG_FORMS: tuple[tuple[str, str, str], ...] = (
    ("Create record 12", "change",
     "REDCap validation suite vanderbilt-redcap/redcap_rsvc, feature B.6.7.2100 (logging table); "
     "Logging.php renderLogRow, INSERT"),
    ("Update record 12", "change",
     "vanderbilt-redcap/redcap_rsvc, randomization feature C.3.30.0600 ('Update record 1-1'); "
     "Logging.php renderLogRow, UPDATE. Also what REDCap writes for a record assigned to a Data "
     "Access Group, for 'Delete all record data for single form/event' (the record stays) and "
     "for a renamed record (see RENAME_EXAMPLE below)"),
    ("Delete record 12", "delete",
     "vanderbilt-redcap/redcap_rsvc, feature B.3.14.1200 Delete record ('Delete record 1'); "
     "Logging.php renderLogRow, DELETE"),
    ("Create record 12 (Event 1 (Arm 1: Arm 1))", "change",
     "vanderbilt-redcap/redcap_rsvc, e-Consent PDF snapshot feature (longitudinal project)"),
    ("Update record 12 (Baseline (Arm 1: Control))", "change",
     "REDCap KB RC-LOG-01 Logging, section 4.2 (bdeveer.github.io/REDCap_KB_RAG)"),
    ("Delete record 12 (Arm 1: Arm 1)", "delete",
     "vanderbilt-redcap/redcap_rsvc, feature B.3.32.0200 Bulk Record Delete; Logging.php "
     "renderLogRow: a deletion names the arm, not the event, when the project has several arms"),
    ("Create record (API) 12", "change",
     "REDCap source, API record import: log description 'Create record (API)'; Logging.php "
     "renderLogRow, INSERT with '(API)' in the description"),
    ("Update record (API) 12", "change",
     "REDCap source, API record import: log description 'Update record (API)'"),
    ("Delete record (API) 12", "delete",
     "Logging.php renderLogRow, DELETE with '(API)' in the description (API/record/delete.php)"),
    ("Delete record (API) 12 (Baseline (Arm 1: Control))", "delete",
     "Logging.php renderLogRow: an API deletion's description is not exactly 'Delete record', so "
     "the event of the entry is named"),
    ("Create record (import) 12", "change",
     "REDCap source, Data Import Tool: log description 'Create record (import)'"),
    ("Update record (import) 12", "change",
     "REDCapR inst/test-data/specific-redcapr/log-read/2024-10-11.R (record column '5')"),
    ("Update record (Auto calculation) 12 (3 Month (Arm 1: Control))", "change",
     "REDCap KB RC-LOG-01 Logging, section 4.2; DataEntry.php history descriptions"),
    ("Update record (API) (Auto calculation) 12 (Baseline)", "change",
     "issue 13 (a real REDCap); DataEntry.php data history: 'Update record (API) (Auto "
     "calculation)'"),
    ("Update record (Data Quality) 12", "change",
     "Logging.php renderLogRow: values fixed from the Data Quality page"),
    ("Update record (DTS) 12", "change", "REDCap source description 'Update record (DTS)'"),
    ("Update record (DDP) 12", "change", "REDCap source description 'Update record (DDP)'"),
    ("Update record (CDP) 12", "change",
     "vanderbilt-redcap/redcap_rsvc, feature C.3.31.2500 (values adjudicated from the EHR by "
     "Clinical Data Pull: 'Update record (CDP) 1')"),
    ("Create Response 12 (Baseline)", "change",
     "issue 13 (a real REDCap, survey entry); Logging.php renderLogRow, INSERT by a survey "
     "respondent (reporting_46)"),
    ("Update Response 12", "change",
     "vanderbilt-redcap/redcap_rsvc, feature B.3.15.0200 survey status ('Update Response 1'); "
     "also 'Erase survey responses and start survey over'"),
    ("Update Response 12 (Event 1 (Arm 1: Arm 1))", "change",
     "vanderbilt-redcap/redcap_rsvc, e-Consent feature ([survey respondent] entries)"),
    ("Update Response (Auto calculation) 12", "change",
     "Logging.php renderLogRow, UPDATE by a survey respondent with ' (Auto calculation)' in the "
     "description ('Update survey response (Auto calculation)')"),
    ("Deleted Response 12", "delete",
     "issue 13 (a real REDCap); English.ini survey_1332: a survey response removed by a Stop "
     "Action (UPDATE 'Delete survey response'). The record itself is gone only when it held "
     "nothing else (survey_1333), so what REDCap lists decides, as for every deletion"),
    ("Uploaded Document Update record 12", "change",
     "Logging.php renderLogRow, DOC_UPLOAD (a file upload field; no registry field is one)"),
    ("Uploaded Document (API) Update record 12", "change",
     "Logging.php renderLogRow, DOC_UPLOAD through the API"),
    ("Deleted Document Update record 12", "change",
     "Logging.php renderLogRow, DOC_DELETE"),
    ("Created Record (API) 12", "change",
     "epicentre-msf/redcap R/parse_logging.R: '(Created?|Updated?|Deleted?) [Rr]ecord'; a "
     "site's logging CSV in the code index ('Created Record (API)'), an older REDCap's wording"),
    ("Updated Record 12", "change", "epicentre-msf/redcap R/parse_logging.R"),
    ("Deleted Record 12 (API)", "delete",
     "epicentre-msf/redcap R/parse_logging.R ('Deleted Record'); the source after the id as "
     "this sync's first parser read it (not confirmed on a live server)"),
)
# A renamed record (Record Home page, or the API's content=record&action=rename): REDCap 13.6.1
# DataEntry::changeRecordId rewrites the record of every earlier log entry to the new name and
# logs "Update record <new>" with the details "<record id field> = '<new>'". Nothing in the log
# names the old record again; see RecordLog.renamed.
RENAME_EXAMPLE = {"action": "Update record 13", "details": "record_id = '13'", "record": "13"}
_EVENT = r"\((?:[^()]|\([^()]*\))*\)"  # "(Baseline)" or "(Baseline (Arm 1: Control))"
_LOG_ACTION = re.compile(
    r"^\s*(?:(?:uploaded|deleted)\s+document(?:\s*\([^()]*\))?\s+)?"
    r"(?P<verb>create|created|update|updated|delete|deleted)\s+(?:record|response)\b"
    r"(?P<how>(?:\s*\([^()]*\))*)\s+(?P<record>\S(?:.*?\S)?)(?:\s*" + _EVENT + r")?\s*$",
    re.I)


def parse_log_entry(entry: dict[str, Any]) -> tuple[str, str] | None:
    """(record id, "change" | "delete") of one logging export entry; None when it names no record.

    The `record` column (REDCap 13.4.9 and later) is trusted over the id in the action text; an
    entry that has a record column but an action of a form not listed above counts as a change:
    reading an unchanged record again writes nothing."""
    action = str(entry.get("action", ""))
    record = str(entry.get("record") or "").strip()
    match = _LOG_ACTION.match(action)
    if match is None:
        return (record, "change") if record else None
    kind = "delete" if match.group("verb").lower().startswith("delete") else "change"
    return (record or match.group("record")), kind


def is_rename(entry: dict[str, Any], id_field: str) -> bool:
    """Whether a logging export entry is a record renamed (see RENAME_EXAMPLE): an update whose
    details set the record id field, which no other update does (a creation sets it too, but
    as "Create record")."""
    match = _LOG_ACTION.match(str(entry.get("action", "")))
    details = str(entry.get("details") or "")
    return bool(match) and match.group("verb").lower().startswith("update") and bool(
        re.search(r"(?:^|[\s,])" + re.escape(id_field) + r" = '", details))


@dataclass
class RecordLog:
    """What the logging export says since a moment: the last action of each record named."""

    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # One new name per rename entry: the old name of a renamed record is in no entry any more.
    renamed: list[str] = field(default_factory=list)
    not_understood: int = 0  # entries naming no record in a form this parser knows


class RedcapFailure(Exception):
    """REDCap could not be read; `transient` failures may succeed when tried again."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


def _scrub(text: str) -> str:
    """A REDCap message fit for a report: short, and every word holding a digit blanked out
    (record ids, dates and numbers)."""
    return re.sub(r"[^\s,;:'\"]*\d[^\s,;:'\"]*", "#", text)[:200]


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "(no JSON error message)"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return _scrub(body["error"])
    return "(no JSON error message)"


class RedcapClient:
    """One REDCap project, read-only."""

    def __init__(self, url: str, token: str, *, timeout: float, retries: int, backoff: float,
                 pause: float, batch_size: int, timezone: str = "",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.retries = retries
        self.backoff = backoff
        self.pause = pause
        self.batch_size = batch_size
        self.zone = ZoneInfo(timezone) if timezone else None
        self.sleep = sleep
        self.server_date: datetime | None = None
        self.project = redcap.Project(url, token, timeout=timeout,
                                      hooks={"response": [self._check_response]})

    # --- every answer passes here ------------------------------------------------------------

    def _check_response(self, response: requests.Response, *_: Any, **__: Any) -> None:
        """requests hook: remember the server's clock and refuse what is not JSON."""
        if response.headers.get("Date"):
            try:
                self.server_date = parsedate_to_datetime(response.headers["Date"])
            except (TypeError, ValueError):
                pass
        status = response.status_code
        if status >= 500:
            raise RedcapFailure(f"REDCap answered {status} (server error)", transient=True,
                                status=status)
        if status in (401, 403):
            raise RedcapFailure(f"REDCap refused the token or a right ({status}): "
                                f"{_error_message(response)}", status=status)
        if status != 200:
            raise RedcapFailure(f"REDCap answered {status}: {_error_message(response)}",
                                status=status)
        try:
            json.loads(response.content)
        except ValueError:
            kind = response.headers.get("Content-Type", "unknown").split(";")[0]
            raise RedcapFailure(f"REDCap answered 200 with a body that is not JSON ({kind}); "
                                "check redcap_api_url and the server") from None

    def _call(self, what: str, action: Callable[[], T]) -> T:
        """Run one API call, retrying transient failures with exponential backoff."""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except RedcapFailure as failure:
                if not failure.transient or attempt == self.retries:
                    raise RedcapFailure(f"{what}: {failure}", transient=failure.transient,
                                        status=failure.status) from None
            except (requests.Timeout, requests.ConnectionError):
                if attempt == self.retries:
                    raise RedcapFailure(f"{what}: REDCap did not answer in time "
                                        f"({self.retries + 1} attempts)", transient=True
                                        ) from None
            except requests.RequestException as error:  # PyCap's RedcapError: an error body
                text = str(error.args[0]) if error.args else ""
                raise RedcapFailure(f"{what}: REDCap answered an error: {_scrub(text)}"
                                    ) from None
            self.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _rows(answer: Any, what: str) -> list[dict[str, Any]]:
        if not isinstance(answer, list) or not all(isinstance(row, dict) for row in answer):
            raise RedcapFailure(f"{what}: REDCap answered JSON of an unexpected shape")
        return answer

    # --- what the sync reads -----------------------------------------------------------------

    @property
    def id_field(self) -> str:
        """The record id field: the first field of the dictionary."""
        return self.project.def_field

    def server_now(self) -> datetime:
        """The REDCap server's clock (naive, in the server's zone) at its last answer."""
        moment = self.server_date
        if moment is None:
            raise RedcapFailure("REDCap sent no Date header; cannot keep a watermark")
        return moment.astimezone(self.zone).replace(tzinfo=None, microsecond=0)

    def metadata(self) -> list[dict[str, Any]]:
        """The project's data dictionary (metadata export)."""
        rows = self._rows(self._call("metadata export", lambda: self.project.export_metadata()),
                          "metadata export")
        # PyCap would otherwise fetch the metadata again, outside the retries, to find the
        # record id field and the field list of an export.
        self.project._metadata = rows
        return rows

    def record_ids(self, since: datetime | None = None) -> list[str]:
        """Ids of every record, or of those created or changed since `since` (server time)."""
        id_field = self.id_field
        rows = self._rows(self._call("record id export", lambda: self.project.export_records(
            fields=[id_field], date_begin=since)), "record id export")
        return list(dict.fromkeys(str(row.get(id_field, "")) for row in rows))

    def record_log(self, since: datetime) -> RecordLog:
        """The records created, changed or deleted since `since`, from the logging export.

        REDCap lists the log newest entry first, at minute resolution: the first entry naming a
        record is its last action. The order is kept as REDCap gives it (re-sorting by the
        minute would reverse a create and a delete of the same minute). Raises RedcapFailure
        with a status when the token lacks the logging right."""
        entries = self._rows(self._call("logging export", lambda: self.project.export_logging(
            log_type="record", begin_time=since)), "logging export")
        found = RecordLog()
        last: dict[str, str] = {}
        for entry in entries:
            parsed = parse_log_entry(entry)
            if parsed is None:
                found.not_understood += 1
                continue
            if parsed[0] not in last:
                last[parsed[0]] = parsed[1]
            if is_rename(entry, self.id_field):
                found.renamed.append(parsed[0])
        found.changed = [record for record, kind in last.items() if kind == "change"]
        found.deleted = [record for record, kind in last.items() if kind == "delete"]
        return found

    def export(self, record_ids: list[str]) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        """(ids that did not come back, flat rows) of these records, one batch at a time.

        A record missing from a batch is asked for once more on its own; what is still missing
        is left to the caller, who tells a deleted record from one REDCap failed to export."""
        for start in range(0, len(record_ids), self.batch_size):
            if start:
                self.sleep(self.pause)  # servers ban bursts
            batch = record_ids[start:start + self.batch_size]
            rows = self._export_batch(batch)
            missing = self._missing(batch, rows)
            if missing:
                self.sleep(self.pause)
                rows += self._export_batch(missing)
                missing = self._missing(batch, rows)
            yield missing, rows

    def _export_batch(self, batch: list[str]) -> list[dict[str, Any]]:
        rows = self._rows(self._call("record export", lambda: self.project.export_records(
            records=batch)), "record export")
        returned = sorted({str(row.get(self.id_field, "")) for row in rows})
        if looks_hashed(returned) and not looks_hashed(batch):
            raise RedcapFailure(HASHED_MESSAGE)
        return rows

    def _missing(self, batch: list[str], rows: list[dict[str, Any]]) -> list[str]:
        returned = {str(row.get(self.id_field, "")) for row in rows}
        return [record_id for record_id in batch if record_id not in returned]


def looks_hashed(record_ids: list[str]) -> bool:
    """Whether the record ids are the 32-character hashes of a de-identified export right."""
    return bool(record_ids) and all(HASHED_ID.match(record_id) for record_id in record_ids)
