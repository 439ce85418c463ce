"""REDCap flat rows -> one de-identified registry record per patient.

How a project's layout maps onto one record (the same rules for classic, longitudinal and
repeating projects):
- A REDCap record gives one registry record. Its rows (one per event x repeat instance) are read
  together; blank values ("") are absent.
- Fields of the diagnosis and treatment instruments take their one non-blank value, whichever
  event holds it; two different non-blank values in two rows are an error (`conflicting_values`).
- The follow-up instrument holds visits (repeating instrument, repeating events, or one event
  per visit): the visit with the latest `last_followup_date` (then the highest instance) gives
  last_followup_day, disease_status_last, vital_status and cause_of_death; progression_day is the
  earliest progression_date of any visit.
- Checkboxes (`field___code` = "1") are ticked when ticked in any row.
De-identification happens here, before anything leaves the site: every date becomes days from
met_dx_date, met_dx_date becomes met_dx_year, the record id becomes an HMAC `subject_id` written
in letters, and only registry fields are read (identifier fields and a site's own extra fields
never are). Problems are reported by field and rule, never with the value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date
from typing import Any

from registry.core.identifiers import is_identifier_field_name
from registry.core.record import validate_record
from registry.core.redcap_dictionary import (
    FOLLOW_UP_FORM, MET_DX_DATE, RedcapField, redcap_fields, redcap_name, site_columns,
)

VISIT_DATE = "last_followup_date"
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INTEGER_PATTERN = re.compile(r"^-?\d+$")
SUBJECT_HASH_LETTERS = 32  # 128 bits of the HMAC
SUBJECT_ALPHABET = "abcdefghijklmnop"  # hexadecimal digit n is written as the n-th letter
# The problems of the edge, by what went wrong: (rule code, message). Published to the upload
# page with the site-side fields (core/site_fields.py), so both report them in the same words.
EDGE_PROBLEMS = {
    "malformed_date": {"code": "malformed_date", "message": "is not a date the registry can "
                       "read (e.g. 2019-04-03, a date cell, or day/month/year with four-digit "
                       "years); correct it in REDCap or in the file"},
    "conflicting_values": {"code": "conflicting_values", "message": "has different values in "
                           "different events or instances; keep one"},
    "unknown_box": {"code": "invalid_choice", "message": "has a ticked box that is not in the "
                    "registry dictionary; re-import the dictionary in REDCap"},
    "unknown_code": {"code": "invalid_choice", "message": "is not a code of the registry "
                     "dictionary; use one of the template's listed codes (re-import the "
                     "dictionary in REDCap)"},
    "not_whole_number": {"code": "invalid_type", "message": "must be a whole number"},
}


def subject_id(secret: str, record_id: str, prefix: str = "") -> str:
    """HMAC-SHA256 of the record id with the site secret, written as letters a..p (4 bits each)."""
    digest = hmac.new(secret.encode(), record_id.encode(), hashlib.sha256).hexdigest()
    letters = "".join(SUBJECT_ALPHABET[int(nibble, 16)] for nibble in digest)
    return prefix + letters[:SUBJECT_HASH_LETTERS]


def split_columns(names: list[str]) -> tuple[list[str], list[str], int]:
    """(the columns the registry reads, the others, how many of those look like identifiers):
    identifier columns and a site's own columns are dropped before any value is read."""
    known = site_columns()
    kept = [name for name in names if name in known]
    dropped = [name for name in names if name and name not in known]
    return kept, dropped, sum(map(is_identifier_field_name, dropped))


def _problem(field: str, what: str) -> dict[str, str]:
    return {"field": field, **EDGE_PROBLEMS[what]}


class _Reader:
    """Reads one REDCap record's rows, collecting problems instead of raising."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.problems: list[dict[str, str]] = []
        self.visit = self._latest_visit()
        # checkbox field -> codes ticked in any row (a field is present when a column is)
        self.boxes: dict[str, set[str]] = {}
        for row in rows:
            for key, value in row.items():
                if "___" in key:
                    name, _, code = key.partition("___")
                    ticked = self.boxes.setdefault(name, set())
                    if str(value) == "1":
                        ticked.add(code)

    def parse_date(self, name: str, text: str) -> date | None:
        """A YYYY-MM-DD value, or None with a `malformed_date` problem (legacy values)."""
        try:
            if DATE_PATTERN.match(text):
                return date.fromisoformat(text)
        except ValueError:
            pass
        self.problems.append(_problem(name, "malformed_date"))
        return None

    def _latest_visit(self) -> dict[str, Any] | None:
        visits = []
        for order, row in enumerate(self.rows):
            text = str(row.get(VISIT_DATE, "") or "")
            when = self.parse_date(VISIT_DATE, text) if text else None
            if when is not None:
                instance = row.get("redcap_repeat_instance")
                visits.append((when, instance if isinstance(instance, int) else 0, order, row))
        return max(visits, key=lambda visit: visit[:3])[3] if visits else None

    def single(self, name: str) -> str | None:
        """The one non-blank value of a non-visit field across the rows."""
        values = {str(row[name]) for row in self.rows if row.get(name) not in (None, "")}
        if len(values) > 1:
            self.problems.append(_problem(name, "conflicting_values"))
            return None
        return values.pop() if values else None

    def value(self, field: RedcapField) -> str | None:
        """The raw REDCap value that feeds a registry field."""
        if field.form != FOLLOW_UP_FORM:
            return self.single(field.name)
        if field.kind == "date" and field.name != VISIT_DATE:  # progression: the earliest
            found = [str(row[field.name]) for row in self.rows
                     if row.get(field.name) not in (None, "")]
            parsed = [(self.parse_date(field.name, text), text) for text in found]
            dated = sorted(text for when, text in parsed if when is not None)
            return dated[0] if dated else None
        if self.visit is None:
            return None
        value = self.visit.get(field.name)
        return None if value in (None, "") else str(value)

    def ticked(self, field: RedcapField) -> list[str] | None:
        """The codes ticked in a checkbox field, or None when no row holds the field."""
        ticked = self.boxes.get(field.name)
        if ticked is None:
            return None
        known = {code.lower(): value for code, value in field.codes}
        if ticked - set(known):
            self.problems.append(_problem(field.name, "unknown_box"))
        return [value for code, value in known.items() if code in ticked]


def assemble(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The registry fields (without subject_id) of one REDCap record's rows, and any problems."""
    reader = _Reader(rows)
    met_dx_text = reader.single(MET_DX_DATE)
    day_zero = reader.parse_date(MET_DX_DATE, met_dx_text) if met_dx_text else None
    record: dict[str, Any] = {}
    for field in redcap_fields():
        if field.kind == "codes":
            record[field.registry_name] = reader.ticked(field)
            continue
        if field.name == MET_DX_DATE:
            record[field.registry_name] = day_zero.year if day_zero else None
            continue
        text = reader.value(field)
        if text is None:
            continue
        if field.kind == "date":
            when = reader.parse_date(field.name, text)
            if when is not None and day_zero is not None:
                record[field.registry_name] = (when - day_zero).days
        elif field.kind == "code":
            value = field.registry_value(text)
            if value is None:
                reader.problems.append(_problem(field.name, "unknown_code"))
            record[field.registry_name] = value
        elif INTEGER_PATTERN.match(text.strip()):
            record[field.registry_name] = int(text)
        else:
            reader.problems.append(_problem(field.name, "not_whole_number"))
    return {key: value for key, value in record.items() if value is not None}, reader.problems


def build_record(rows: list[dict[str, Any]], subject: str,
                 min_remission_days: int | None = None
                 ) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """A registry record ready to send, or None and its problems (edge and registry rules,
    under the given inclusion threshold, else the default).

    Problems name the REDCap field (`field`) and the registry field (`registry_field`)."""
    record, problems = assemble(rows)
    record = {"subject_id": subject, **record}
    _, errors = validate_record(record, min_remission_days)
    reported = {problem["field"] for problem in problems}
    for error in errors:
        name = redcap_name(error["field"].split(".")[0])
        if name in reported:  # an edge problem already explains it
            continue
        if MET_DX_DATE in reported and name.endswith("_date"):
            continue  # without day 0 no date can become a day: the day-0 problem says it
        problems.append({**error, "field": name})
    if problems:
        registry_names = {field.name: field.registry_name for field in redcap_fields()}
        return None, [{**problem, "registry_field": registry_names.get(problem["field"],
                                                                        problem["field"])}
                      for problem in problems]
    return record, []
