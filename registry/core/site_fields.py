"""The site-side fields as data: everything a converter at the site needs, from the one schema.

registry-submit (Python, registry/site/submit) and the console's upload page (JavaScript in the
browser) turn the same spreadsheet into the same de-identified records. The page holds no list
of fields of its own: the server publishes `site_fields_description()`, built here from the
record schema (through the REDCap dictionary's field table), the identifier firewall's words and
the constants that registry-submit itself reads dates and pseudonyms with (defined here, and
imported by it). Adding a field to the schema adds it to the description.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from registry.core import deidentify, identifiers
from registry.core.record import DICTIONARY_VERSION
from registry.core.redcap_dictionary import (
    FOLLOW_UP_FORM, MET_DX_DATE, RECORD_ID, REDCAP_COLUMNS, checkbox_column, code_label,
    redcap_fields, site_columns,
)

# Where a write from a spreadsheet is recorded as coming from (header X-Registry-Source).
SOURCE = "spreadsheet"
# Records per batch request (a site's push_batch_size may change it; the registry takes 1,000).
PUSH_BATCH_SIZE = 500
SITE_SECRET_MIN_LENGTH = 32
# A site's optional prefix of subject ids: a few letters, optionally ending in '-', '_' or '.'.
SUBJECT_PREFIX = re.compile(r"(?:[A-Za-z]{1,24}[-_.]?)?")
DATE_ORDERS = ("dmy", "mdy", "ymd")
DEFAULT_DATE_ORDER = "dmy"
EXCEL_EPOCH = date(1899, 12, 30)  # Excel's day 0 (it counts 1900 as a leap year)
ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?$")
SEPARATED_DATE = re.compile(r"^(\d{1,4})[/.\-](\d{1,2})[/.\-](\d{1,4})$")
SERIAL_DATE = re.compile(r"^\d{4,5}(?:\.0+)?$")
ROW_WITHOUT_ID = {"field": RECORD_ID, "code": "required",
                  "message": "every row needs the site's record id"}


def normalise_date(value: Any, date_order: str) -> str:
    """A date cell as YYYY-MM-DD; unreadable text is returned as it is (reported later)."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = str(int(value)) if float(value).is_integer() else str(value)
    else:
        text = str(value).strip()
    try:
        iso = ISO_DATE.match(text)
        if iso:
            return date(*map(int, iso.groups())).isoformat()
        if SERIAL_DATE.match(text):
            return (EXCEL_EPOCH + timedelta(days=int(float(text)))).isoformat()
        parts = SEPARATED_DATE.match(text)
        if parts:
            first, second, third = parts.groups()
            if date_order == "ymd" or len(first) == 4:
                year, month, day = first, second, third
            elif date_order == "mdy":
                month, day, year = first, second, third
            else:
                day, month, year = first, second, third
            if len(year) == 4:  # two-digit years are ambiguous: reported, never guessed
                return date(int(year), int(month), int(day)).isoformat()
    except ValueError:
        pass
    return text


def _field(spec: Any) -> dict[str, Any]:
    described: dict[str, Any] = {"name": spec.name, "registry_name": spec.registry_name,
                                 "form": spec.form, "kind": spec.kind,
                                 "required": spec.required}
    if spec.codes:
        described["codes"] = [{"code": code, "value": value, "label": code_label(value)}
                              for code, value in spec.codes]
    if spec.kind == "codes":
        described["columns"] = [checkbox_column(spec.name, code) for code, _ in spec.codes]
    if spec.bounds:
        described["bounds"] = list(spec.bounds)
    return described


def site_fields_description(max_batch: int | None = None) -> dict[str, Any]:
    """The site-side fields and the rules of the edge de-identification, as JSON-ready data."""
    # Here, not at the top: the sync imports this module's constants and needs no openpyxl.
    from registry.core.template import RECORDS_SHEET

    day_zero_field = next(spec.registry_name for spec in redcap_fields()
                          if spec.name == MET_DX_DATE)
    return {
        "dictionary_version": DICTIONARY_VERSION,
        "source": SOURCE,
        "records_sheet": RECORDS_SHEET,
        "record_id": RECORD_ID,
        "redcap_columns": list(REDCAP_COLUMNS),
        "day_zero": {"column": MET_DX_DATE, "becomes": day_zero_field,
                     "rule": "every other date becomes its number of days from this date; "
                             "this date becomes its year"},
        "follow_up": {"form": FOLLOW_UP_FORM, "visit_date": deidentify.VISIT_DATE,
                      "rule": "the visit with the latest visit date (then the highest "
                              "redcap_repeat_instance, then the last row) gives the follow-up "
                              "fields; a follow-up date field other than the visit date takes "
                              "the earliest date of any visit"},
        "columns": [{"name": name, "kind": kind} for name, kind in site_columns().items()],
        "fields": [_field(spec) for spec in redcap_fields()],
        "pseudonym": {"algorithm": "HMAC-SHA256", "key": "the site secret, UTF-8",
                      "message": "the record id, UTF-8",
                      "alphabet": deidentify.SUBJECT_ALPHABET,
                      "letters": deidentify.SUBJECT_HASH_LETTERS,
                      "secret_min_length": SITE_SECRET_MIN_LENGTH,
                      "prefix": "^" + SUBJECT_PREFIX.pattern + "$",
                      "rule": "each hexadecimal digit of the digest, 0 to f, written as the "
                              "letter of the alphabet at that position; the first `letters` "
                              "of them, after the site's optional prefix"},
        "dates": {"excel_epoch": EXCEL_EPOCH.isoformat(), "iso": ISO_DATE.pattern,
                  "separated": SEPARATED_DATE.pattern, "serial": SERIAL_DATE.pattern,
                  "orders": list(DATE_ORDERS), "default_order": DEFAULT_DATE_ORDER,
                  "normalised": deidentify.DATE_PATTERN.pattern},
        "integer": deidentify.INTEGER_PATTERN.pattern,
        "identifier_names": {"short_words": sorted(identifiers.SHORT_NAME_WORDS),
                             "long_words": list(identifiers.LONG_NAME_WORDS)},
        "problems": deidentify.EDGE_PROBLEMS | {"row_without_id": ROW_WITHOUT_ID},
        "batch_size": PUSH_BATCH_SIZE if max_batch is None else min(PUSH_BATCH_SIZE, max_batch),
    }
