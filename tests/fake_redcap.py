"""A fake REDCap server speaking the API protocol of redcap.md, with injectable faults.

REDCap is licensed software with no open emulator; this WSGI app answers what the sync asks the
way real servers do: one POST endpoint, form-encoded, `content` dispatch, token check, JSON
errors with 400/403, flat rows (one per record x event x repeat instance) whose values are all
strings ("" = blank) except an integer `redcap_repeat_instance`, checkboxes as `field___code`,
`dateRangeBegin` that sees creations and changes but not deletions, and a logging export.
Faults: 500, timeout (a slow answer), HTML with 200, missing rows, hashed record ids.

Time as a real server keeps it: the log and `dateRangeBegin` are in the server's local time in a
named zone (not UTC: Newfoundland's -03:30 by default, west of UTC so that a sync reading
the log in the wrong zone misses changes, and a half-hour offset), the log at
minute resolution, newest entry first, with the `record` column (REDCap 13.4.9 and later; off
with `record_column=False`), while the HTTP `Date` header is in GMT. Every record-level action
form of `registry.site.redcap.client.LOG_FORMS` that a site produces can be written: data entry
forms, surveys ("Create Response 12 (Baseline)"), API and Data Import Tool writes, calculated
fields recomputed by REDCap ("Update record (API) (Auto calculation) 12 (Baseline)"),
deletions from a form or the API ("Delete record (API) 12 (Baseline ...)"), a survey response
removed by a Stop Action ("Deleted Response 12", the record gone or kept), and a record renamed
(REDCap rewrites the record of its earlier entries to the new name and logs "Update record <new>"
with "record_id = '<new>'" as details). `same_minute()` holds the clock still so that a create
and a delete can share a minute, as they do when a record entered in the wrong project is
deleted at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from registry.core.redcap_dictionary import HEADER, dictionary_rows

METADATA_KEYS = (
    "field_name", "form_name", "section_header", "field_type", "field_label",
    "select_choices_or_calculations", "field_note", "text_validation_type_or_show_slider_number",
    "text_validation_min", "text_validation_max", "identifier", "branching_logic",
    "required_field", "custom_alignment", "question_number", "matrix_group_name",
    "matrix_ranking", "field_annotation",
)


def registry_metadata() -> list[dict[str, str]]:
    """The registry's dictionary as REDCap's metadata export shows it after an import."""
    return [dict(zip(METADATA_KEYS, (row[column] for column in HEADER)))
            for row in dictionary_rows()]


@dataclass
class Fault:
    """A fault to inject: kind in 500 | timeout | html | missing_rows | forbidden."""

    kind: str
    content: str = "record"  # which API content it hits
    times: int = 1  # how many requests it hits; -1 = every one


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# How each kind of write is logged: (username, action of a creation, action of an update).
WRITES = {
    "form": ("site_dm", "Create record {id}{event}", "Update record {id}{event}"),
    "survey": ("[survey respondent]", "Create Response {id}{event}", "Update Response {id}{event}"),
    "api": ("site_api", "Create record (API) {id}{event}", "Update record (API) {id}{event}"),
    "import": ("site_dm", "Create record (import) {id}{event}",
               "Update record (import) {id}{event}"),
    # calculated fields recomputed by REDCap after an API write, or by a data quality rule
    "api_autocalc": ("site_api", "Update record (API) (Auto calculation) {id}{event}",
                     "Update record (API) (Auto calculation) {id}{event}"),
    "autocalc": ("SYSTEM", "Update record (Auto calculation) {id}{event}",
                 "Update record (Auto calculation) {id}{event}"),
}
# How each kind of deletion is logged: (username, action). A deletion from the Record Home page
# names the arm when the project has several, an API deletion names the event (Logging.php).
DELETES = {
    "form": ("site_dm", "Delete record {id}{arm}"),
    # a Stop Action removed the survey response, and the record held nothing else
    "survey": ("[survey respondent]", "Deleted Response {id}{event}"),
    "api": ("site_api", "Delete record (API) {id}{event}"),
}


@dataclass
class FakeRedcap:
    """The state of one fake REDCap project and its server."""

    token: str = "0123456789ABCDEF0123456789ABCDEF"
    longitudinal: bool = True
    events: tuple[str, ...] = ("baseline_arm_1", "follow_up_arm_1")
    repeating_form: str = "follow_up"
    logging_right: bool = True
    hashed_ids: bool = False
    record_column: bool = True  # the logging export's `record` column (REDCap >= 13.4.9)
    newest_first: bool = True  # False: a server listing its log the other way round
    zone: str = "America/St_Johns"  # the server's local time zone
    clock: Callable[[], datetime] = field(default_factory=lambda: _utc_now)
    slow_seconds: float = 3.0
    metadata: list[dict[str, str]] = field(default_factory=registry_metadata)
    faults: list[Fault] = field(default_factory=list)
    # record id -> list of rows holding only the fields entered (strings); row keys include
    # redcap_event_name, redcap_repeat_instrument and redcap_repeat_instance when they apply.
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    modified: dict[str, datetime] = field(default_factory=dict)
    log: list[dict[str, str]] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the project's data, as a site would edit it -------------------------------------------

    def now(self) -> datetime:
        """The server's local time (naive, as REDCap shows it), to the second."""
        return self.clock().astimezone(ZoneInfo(self.zone)).replace(tzinfo=None, microsecond=0)

    @contextmanager
    def same_minute(self) -> Iterator[None]:
        """Hold the clock still: every action inside is logged in the same minute."""
        moment = self.clock()
        held, self.clock = self.clock, lambda: moment
        try:
            yield
        finally:
            self.clock = held

    def save(self, record_id: str, rows: list[dict[str, Any]], *, via: str = "form") -> None:
        """Create or replace a record (rows of entered values), logging it as REDCap does for
        a write `via` a data entry form, a survey, the API, the import tool or a recalculation."""
        with self.lock:
            username, create, update = WRITES[via]
            created = record_id not in self.records
            self.records[record_id] = [dict(row) for row in rows]
            self._touch(record_id, create if created else update, username,
                        f"record_id = '{record_id}', (fields)" if created else "(fields)")

    def erase_response(self, record_id: str, rows: list[dict[str, Any]]) -> None:
        """A survey Stop Action removed the survey's response; the record keeps `rows`."""
        with self.lock:
            self.records[record_id] = [dict(row) for row in rows]
            self._touch(record_id, "Deleted Response {id}{event}", "[survey respondent]",
                        "(fields)")

    def rename(self, old_id: str, new_id: str) -> None:
        """Rename a record as REDCap does (DataEntry::changeRecordId): its earlier log entries
        are rewritten to the new name, and the rename is logged as an update of the new name."""
        with self.lock:
            self.records[new_id] = self.records.pop(old_id)
            self.modified.pop(old_id, None)
            for entry in self.log:
                if entry.get("log_record") == old_id:
                    entry.update(log_record=new_id, action=entry["action"].replace(
                        f" {old_id}", f" {new_id}", 1))
                    if self.record_column:
                        entry["record"] = new_id
            self._touch(new_id, "Update record {id}{event}", "site_dm",
                        f"record_id = '{new_id}'")

    def delete(self, record_id: str, *, via: str = "form") -> None:
        """Delete a record: it vanishes from exports; only the log tells."""
        with self.lock:
            del self.records[record_id]
            self.modified.pop(record_id, None)
            username, action = DELETES[via]
            self._touch(record_id, action, username, f"record_id = '{record_id}'")

    def _touch(self, record_id: str, action: str, username: str, details: str) -> None:
        now = self.now()
        if record_id in self.records:
            self.modified[record_id] = now
        event = f" ({self._event_label(self.events[0])})" if self.longitudinal else ""
        arms = {event_name.rpartition("_arm_")[2] for event_name in self.events}
        arm = " (Arm 1: Arm 1)" if self.longitudinal and len(arms) > 1 else ""
        # `log_record` is the entry's record as REDCap keeps it (its pk), not an export column
        entry = {"timestamp": now.strftime("%Y-%m-%d %H:%M"), "username": username,
                 "action": action.format(id=record_id, event=event, arm=arm),
                 "details": details, "log_record": record_id}
        if self.record_column:
            entry["record"] = record_id
        self.log.insert(0, entry)  # newest first, as REDCap lists it

    @staticmethod
    def _event_label(unique_name: str) -> str:
        """"baseline_arm_1" -> "Baseline (Arm 1: Arm 1)", as the log names an event."""
        name, _, arm = unique_name.rpartition("_arm_")
        return f"{name.replace('_', ' ').title()} (Arm {arm}: Arm {arm})"

    # --- the API ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.respond(Request(environ))(environ, start_response)

    def _fault(self, content: str) -> Fault | None:
        for fault in self.faults:
            if fault.content == content and fault.times != 0:
                fault.times -= 1 if fault.times > 0 else 0
                return fault
        return None

    def respond(self, request: Request) -> Response:
        """Answer one API request; errors come in returnFormat, else format, else XML."""
        response = self._answer(request)
        form = request.form
        error_format = form.get("returnFormat") or form.get("format") or "xml"
        if response.status_code >= 400 and error_format == "xml" and \
                response.mimetype == "application/json":
            message = json.loads(response.get_data())["error"]
            return Response(f'<?xml version="1.0" encoding="UTF-8" ?>\n<hash>\n  <error>'
                            f'{message}</error>\n</hash>', response.status_code,
                            content_type="text/xml; charset=utf-8")
        return response

    def _answer(self, request: Request) -> Response:
        if request.method != "POST":
            return _error("The API only accepts POST requests", 405)
        form = request.form
        self.requests.append({key: value for key, value in form.items() if key != "token"})
        if form.get("token") != self.token:
            return _error("You do not have permissions to use the API", 403)
        content = form.get("content", "")
        fault = self._fault(content)
        if fault and fault.kind == "500":
            return _error("An internal error occurred", 500)
        if fault and fault.kind == "timeout":
            time.sleep(self.slow_seconds)
        if fault and fault.kind == "html":
            return Response("<html><body>REDCap is down for maintenance</body></html>", 200,
                            content_type="text/html; charset=utf-8")
        if form.get("format", "xml") != "json" and content != "version":
            return _error("this fake answers format=json only", 400)
        handler = {
            "metadata": lambda: self.metadata,
            "project": lambda: {"project_id": "17", "is_longitudinal": int(self.longitudinal),
                                "has_repeating_instruments_or_events": 1},
            "exportFieldNames": self._field_names,
            "event": lambda: [{"unique_event_name": name} for name in self.events]
            if self.longitudinal else _error("You cannot export events for classic projects",
                                             400),
            "formEventMapping": self._form_events,
            "repeatingFormsEvents": lambda: [{"event_name": self.events[-1],
                                              "form_name": self.repeating_form}],
            "record": lambda: self._records(form, fault),
            "log": lambda: self._log(form),
            "version": lambda: Response("14.5.0", 200, content_type="text/html"),
        }.get(content)
        if handler is None:
            return _error("The value of the parameter \"content\" is not valid", 400)
        with self.lock:
            answer = handler()
        if isinstance(answer, Response):
            return answer
        return Response(json.dumps(answer), 200, content_type="application/json; charset=utf-8")

    def _form_events(self) -> Any:
        if not self.longitudinal:
            return _error("You cannot export form/event mappings for classic projects", 400)
        forms = dict.fromkeys(row["form_name"] for row in self.metadata)
        return [{"arm_num": 1, "unique_event_name": event, "form": form}
                for event in self.events for form in forms
                if (form == self.repeating_form) == (event == self.events[-1])]

    def _field_names(self) -> list[dict[str, str]]:
        names = []
        for row in self.metadata:
            if row["field_type"] == "checkbox":
                for choice in row["select_choices_or_calculations"].split("|"):
                    code = choice.split(",")[0].strip()
                    names.append({"original_field_name": row["field_name"],
                                  "choice_value": code,
                                  "export_field_name": f"{row['field_name']}___{code.lower()}"})
            elif row["field_type"] != "descriptive":
                names.append({"original_field_name": row["field_name"], "choice_value": "",
                              "export_field_name": row["field_name"]})
        return names

    def _log(self, form: Any) -> Any:
        if not self.logging_right:
            return _error("You do not have Logging privileges in this project", 403)
        begin = form.get("beginTime", "")[:16]  # "YYYY-MM-DD HH:MM[:SS]", server time
        entries = [{key: value for key, value in entry.items() if key != "log_record"}
                   for entry in self.log  # newest first
                   if form.get("logtype") in (None, "record") and entry["timestamp"] >= begin]
        return entries if self.newest_first else entries[::-1]

    def _layout(self) -> list[tuple[str, str, str, tuple[str, ...]]]:
        """(field, form, type, checkbox codes) of every exported field, in dictionary order."""
        return [(meta["field_name"], meta["form_name"], meta["field_type"],
                 tuple(choice.split(",")[0].strip()
                       for choice in meta["select_choices_or_calculations"].split("|"))
                 if meta["field_type"] == "checkbox" else ())
                for meta in self.metadata if meta["field_type"] != "descriptive"]

    def _columns(self, row: dict[str, Any], wanted: set[str] | None,
                 layout: list[tuple[str, str, str, tuple[str, ...]]]) -> dict[str, Any]:
        """Every export column of the project for one row: entered values or ""."""
        out: dict[str, Any] = {}
        repeating = row.get("redcap_repeat_instrument", "")
        filled: set[str] = set()
        for name, form_name, field_type, codes in layout:
            if wanted and name not in wanted:
                continue
            if name == "record_id":
                out[name] = row["record_id"]
                if self.longitudinal:
                    out["redcap_event_name"] = row.get("redcap_event_name", self.events[0])
                out["redcap_repeat_instrument"] = repeating
                out["redcap_repeat_instance"] = row.get("redcap_repeat_instance", "")
                continue
            applies = (repeating == form_name) or (
                not repeating and form_name != self.repeating_form)
            if row.get(name):
                filled.add(form_name)
            if field_type == "checkbox":
                ticked = set(row.get(name, []))
                for code in codes:
                    out[f"{name}___{code.lower()}"] = ("1" if code in ticked else "0") \
                        if applies else ""
            else:
                out[name] = str(row.get(name, "")) if applies else ""
        for form_name in dict.fromkeys(form for _, form, _, _ in layout):
            if not wanted or f"{form_name}_complete" in wanted:
                out[f"{form_name}_complete"] = "2" if form_name in filled else ""
        return out

    def _records(self, form: Any, fault: Fault | None) -> Any:
        if form.get("type", "flat") != "flat":
            return _error("only flat exports in the fake", 400)
        wanted_ids = [value for key, value in form.items() if key.startswith("records[")]
        wanted_fields = {value for key, value in form.items() if key.startswith("fields[")}
        begin = form.get("dateRangeBegin")
        ids = wanted_ids or list(self.records)
        if begin:
            since = datetime.strptime(begin, "%Y-%m-%d %H:%M:%S")
            ids = [record_id for record_id in ids
                   if record_id in self.modified and self.modified[record_id] >= since]
        if fault and fault.kind == "missing_rows" and wanted_ids:
            ids = ids[1:]  # a requested record that does not come back
        return self.flat_rows(ids, wanted_fields or None)

    def flat_rows(self, ids: list[str], wanted_fields: set[str] | None = None
                  ) -> list[dict[str, Any]]:
        """The flat export rows of these records, as REDCap sends them."""
        rows = []
        layout = self._layout()
        for record_id in ids:
            for row in self.records.get(record_id, []):
                shown = self._columns({**row, "record_id": record_id}, wanted_fields, layout)
                if self.hashed_ids:
                    shown["record_id"] = hashlib.md5(record_id.encode()).hexdigest()
                rows.append(shown)
        return rows


def _error(message: str, status: int) -> Response:
    return Response(json.dumps({"error": message}), status,
                    content_type="application/json; charset=utf-8")


class _QuietHandler(WSGIRequestHandler):
    """No access log: the test output stays readable. The HTTP Date (GMT) comes from the app's
    clock when it has one, as a server's Date and its log come from the same clock."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        clock = getattr(self.server.app, "clock", None)  # type: ignore[attr-defined]
        if timestamp is None and clock is not None:
            return format_datetime(clock().astimezone(timezone.utc), usegmt=True)
        return super().date_time_string(timestamp)


class ServerThread:
    """A WSGI app served on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True,
                                  request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def site_values(record: dict[str, Any], day_zero: Any) -> Iterator[tuple[Any, Any]]:
    """(REDCap field, value) for every field a site's REDCap holds of a registry record: dates
    as dates (metastatic diagnosis on `day_zero`), a code as the REDCap code, checkboxes as the
    list of REDCap codes ticked, numbers as they are; fields the record leaves blank left out."""
    from datetime import timedelta

    from registry.core.redcap_dictionary import redcap_fields

    for spec in redcap_fields():
        value = record.get(spec.registry_name)
        if spec.name == "met_dx_date":
            value = day_zero
        elif value is None or value == []:
            continue
        elif spec.kind == "date":
            value = day_zero + timedelta(days=value)
        elif spec.kind == "code":
            value = {v: c for c, v in spec.codes}[value]
        elif spec.kind == "codes":
            value = [{v: c for c, v in spec.codes}[item] for item in value]
        yield spec, value


def site_rows(record: dict[str, Any], day_zero: Any, *, longitudinal: bool = True,
              events: tuple[str, str] = ("baseline_arm_1", "follow_up_arm_1"),
              earlier_visits: int = 1) -> list[dict[str, Any]]:
    """How a site's REDCap holds a registry record: real dates, a baseline row and repeating
    follow-up visits (the last one holding the record's follow-up values)."""
    from datetime import timedelta

    from registry.core.redcap_dictionary import FOLLOW_UP_FORM

    baseline: dict[str, Any] = {}
    final_visit: dict[str, Any] = {}
    for spec, value in site_values(record, day_zero):
        if spec.kind == "date":
            value = value.isoformat()
        (final_visit if spec.form == FOLLOW_UP_FORM else baseline)[spec.name] = value
    if longitudinal:
        baseline["redcap_event_name"] = events[0]
    rows = [baseline]
    last = record["last_followup_day"]
    start = record["remission_start_day"]
    for instance in range(1, earlier_visits + 1):
        # an earlier visit, between remission and the last follow-up, before any progression
        day = start + (min(last, record.get("progression_day") or last) - start) * instance \
            // (earlier_visits + 2)
        rows.append({"last_followup_date": (day_zero + timedelta(days=day)).isoformat(),
                     "disease_status_last": "ned", "vital_status": "alive",
                     "redcap_repeat_instrument": FOLLOW_UP_FORM,
                     "redcap_repeat_instance": instance})
    final_visit.update({"redcap_repeat_instrument": FOLLOW_UP_FORM,
                        "redcap_repeat_instance": earlier_visits + 1})
    rows.append(final_visit)
    if longitudinal:
        for row in rows[1:]:
            row["redcap_event_name"] = events[1]
    return rows
