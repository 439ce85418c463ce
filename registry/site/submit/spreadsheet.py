"""Reading a site's spreadsheet: a REDCap raw CSV export or the registry's template.

Both use the site-side names of the REDCap data dictionary, so both become the same flat rows
that REDCap's API exports, and the de-identification of the core reads them unchanged:
- a REDCap export (CSV, raw codes) may hold several rows per record (events, repeating
  instruments) and columns REDCap adds (`redcap_event_name`, `*_complete`, ...);
- the template (.xlsx or .csv) holds one row per patient.
Only the columns the registry's dictionary defines are kept: identifier columns and a site's
own extra columns are dropped as the file is read, and reported by count (never by value).
Dates are brought to YYYY-MM-DD here with the core's `normalise_date` (Excel serial numbers, ISO
dates, or day/month order as the site writes them; the upload page of the console reads them with
the same rules, published from core/site_fields.py); a date that cannot be read is left as it is,
and the core reports it as a `malformed_date` for its field and row.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.core.deidentify import split_columns
from registry.core.redcap_dictionary import RECORD_ID, site_columns
from registry.core.site_fields import normalise_date
from registry.core.template import RECORDS_SHEET


class SpreadsheetError(Exception):
    """The file cannot be read as a spreadsheet of the registry; the message says why."""


@dataclass
class Sheet:
    """What was read: rows per local record id, their row numbers, what was dropped."""

    rows_of: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    row_numbers: dict[str, list[int]] = field(default_factory=dict)
    rows_read: int = 0
    rows_without_id: list[int] = field(default_factory=list)
    dropped_columns: int = 0
    dropped_identifier_columns: int = 0


def _cell_text(value: Any) -> str:
    """A non-date cell as REDCap would export it: text, whole numbers without '.0'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _read_csv(path: Path) -> tuple[list[str], list[list[Any]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error):
        raise SpreadsheetError(f"{path.name} is not a UTF-8 CSV file") from None
    except OSError as error:
        raise SpreadsheetError(f"cannot read {path.name}: {error.strerror}") from None
    if not rows:
        raise SpreadsheetError(f"{path.name} is empty")
    return rows[0], rows[1:]


def _read_xlsx(path: Path) -> tuple[list[str], list[list[Any]]]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError):
        raise SpreadsheetError(f"{path.name} is not an .xlsx workbook") from None
    try:
        sheet = workbook[RECORDS_SHEET] if RECORDS_SHEET in workbook.sheetnames \
            else workbook.worksheets[0]
        rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()  # a read-only workbook keeps its file open until closed
    if not rows:
        raise SpreadsheetError(f"{path.name} has an empty first sheet")
    return [_cell_text(value) for value in rows[0]], rows[1:]


def read_spreadsheet(path: Path, date_order: str) -> Sheet:
    """Read a CSV or .xlsx file into the flat rows of each local record."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, rows = _read_csv(path)
    elif suffix in (".xlsx", ".xlsm"):
        header, rows = _read_xlsx(path)
    else:
        raise SpreadsheetError("the file must be .csv (REDCap export or template) or .xlsx")
    known = site_columns()
    names = [name.strip().lower() for name in header]
    if RECORD_ID not in names:
        raise SpreadsheetError(f"{path.name} has no {RECORD_ID} column: use the registry's "
                               "template or a REDCap export in raw codes")
    kept_names, dropped, identifiers = split_columns(names)
    kept = [(index, name) for index, name in enumerate(names) if name in kept_names]
    sheet = Sheet(dropped_columns=len(dropped), dropped_identifier_columns=identifiers)
    for number, row in enumerate(rows, start=2):
        values = {name: row[index] if index < len(row) else None for index, name in kept}
        if all(_cell_text(value) == "" for value in values.values()):
            continue  # a blank line
        sheet.rows_read += 1
        flat: dict[str, Any] = {}
        for name, value in values.items():
            kind = known[name]
            if kind == "date" and _cell_text(value) != "":
                flat[name] = normalise_date(value, date_order)
            elif name == "redcap_repeat_instance":
                text = _cell_text(value)
                flat[name] = int(text) if text.isdigit() else ""
            else:
                flat[name] = _cell_text(value)
        record_id = flat.get(RECORD_ID, "")
        if not record_id:
            sheet.rows_without_id.append(number)
            continue
        sheet.rows_of.setdefault(record_id, []).append(flat)
        sheet.row_numbers.setdefault(record_id, []).append(number)
    return sheet
