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
# "Update record 12", "Created Record (API) 12", "Deleted Record 12 (API)": the verb and the id.
_LOG_ACTION = re.compile(r"^\s*(create|created|update|updated|delete|deleted)\s+record\b"
                         r"(?:\s*\([^)]*\))?\s+(\S+)(?:\s*\([^)]*\))?\s*$", re.I)


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

    def record_log(self, since: datetime) -> tuple[list[str], list[str]]:
        """(changed, deleted) record ids since `since`, from the logging export.

        Raises RedcapFailure with a status when the token lacks the logging right."""
        entries = self._rows(self._call("logging export", lambda: self.project.export_logging(
            log_type="record", begin_time=since)), "logging export")
        last_action: dict[str, str] = {}
        for entry in sorted(entries, key=lambda item: str(item.get("timestamp", ""))):
            match = _LOG_ACTION.match(str(entry.get("action", "")))
            if match:
                last_action.pop(match.group(2), None)  # keep the order of the last action
                last_action[match.group(2)] = match.group(1).lower()[:6]
        changed = [record for record, action in last_action.items() if action != "delete"]
        deleted = [record for record, action in last_action.items() if action == "delete"]
        return changed, deleted

    def export(self, record_ids: list[str]) -> Iterator[list[dict[str, Any]]]:
        """The flat rows of these records, one batch at a time; every id must come back."""
        id_field = self.id_field
        for start in range(0, len(record_ids), self.batch_size):
            if start:
                self.sleep(self.pause)  # servers ban bursts
            batch = record_ids[start:start + self.batch_size]
            rows = self._rows(self._call("record export", lambda: self.project.export_records(
                records=batch)), "record export")
            returned = {str(row.get(id_field, "")) for row in rows}
            if looks_hashed(sorted(returned)) and not looks_hashed(batch):
                raise RedcapFailure(HASHED_MESSAGE)
            missing = len(set(batch) - returned)
            if missing:
                raise RedcapFailure(f"record export: {missing} of {len(batch)} requested records "
                                    "did not come back; nothing was sent")
            yield rows


def looks_hashed(record_ids: list[str]) -> bool:
    """Whether the record ids are the 32-character hashes of a de-identified export right."""
    return bool(record_ids) and all(HASHED_ID.match(record_id) for record_id in record_ids)
