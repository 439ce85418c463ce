"""The registry's spreadsheet template, generated from the record schema.

One row per patient and one column per site-side field, named as in the site's REDCap data
dictionary (`record_id`, dates as `*_date`, a checkbox column `field___code` per code of a list),
so that registry-submit reads a filled template and a REDCap export with the same code. Every
coded column gets a drop-down list, date columns are date-formatted, whole numbers are checked
against their range, and a second sheet explains each field and its rules (the REDCap
dictionary's own text, from the rule table).
"""

from __future__ import annotations

import io
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter, quote_sheetname
from openpyxl.worksheet.datavalidation import DataValidation

from registry.core.record import DICTIONARY_VERSION
from registry.core.redcap_dictionary import (
    RECORD_ID, RedcapField, checkbox_column, code_label, dictionary_rows, redcap_code,
    redcap_fields, redcap_name,
)
from registry.core.rules import rule_texts

RECORDS_SHEET = "records"
FIELDS_SHEET = "fields"
CODES_SHEET = "codes"
# Rows of the records sheet that carry the drop-downs and formats.
TEMPLATE_ROWS = 2000
DATE_FORMAT = "yyyy-mm-dd"
CHECKBOX = ("1", "0")


def template_columns() -> list[tuple[str, RedcapField | None]]:
    """(column, the REDCap field it feeds) of the template, record_id first."""
    columns: list[tuple[str, RedcapField | None]] = [(RECORD_ID, None)]
    for field in redcap_fields():
        if field.kind == "codes":
            columns.extend((checkbox_column(field.name, code), field) for code, _ in field.codes)
        else:
            columns.append((field.name, field))
    return columns


def template_csv_header() -> str:
    """The template as CSV: its header line."""
    return ",".join(column for column, _ in template_columns()) + "\n"


def _explanations(workbook: Workbook) -> None:
    sheet = workbook.create_sheet(FIELDS_SHEET)
    heading = ("column", "what it holds", "type", "required", "allowed codes (code = meaning)",
               "notes", "rules the registry checks", "asked only if")
    sheet.append(heading)
    sheet.append((RECORD_ID, "the site's own record id; never sent: the registry receives an "
                  "HMAC of it made with the site secret", "text", "y", "", "", "", ""))
    registry_name = {spec.name: spec.registry_name for spec in redcap_fields()}
    for row in dictionary_rows():
        name = row["Variable / Field Name"]
        if row["Field Type"] == "descriptive" or name == RECORD_ID:
            continue
        kind = row["Text Validation Type OR Show Slider Number"] or row["Field Type"]
        kind = {"date_ymd": "date", "radio": "one code", "checkbox": "codes: 1 = yes, 0 = no, "
                "one column per code"}.get(kind, kind)
        if row["Text Validation Min"]:
            kind += f" {row['Text Validation Min']} to {row['Text Validation Max']}"
        rules = rule_texts(registry_name[name], redcap_name, redcap_code)
        sheet.append((name, row["Field Label"], kind, row["Required Field?"],
                      row["Choices, Calculations, OR Slider Labels"].replace(", ", " = "),
                      row["Field Note"], "; ".join(rules),
                      row["Branching Logic (Show field only if...)"]))
    sheet.append(())
    sheet.append((f"registry data dictionary version {DICTIONARY_VERSION}. Dates stay at the "
                  "site: registry-submit sends days from met_dx_date and its year only.",))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for letter, width in zip("ABCDEFGH", (30, 60, 22, 9, 60, 60, 60, 50)):
        sheet.column_dimensions[letter].width = width
    sheet.freeze_panes = "B2"


def _code_lists(workbook: Workbook) -> dict[str, str]:
    """A sheet listing every coded field's codes; field -> the range a drop-down reads."""
    sheet = workbook.create_sheet(CODES_SHEET)
    ranges: dict[str, str] = {}
    coded = [field for field in redcap_fields() if field.kind == "code"]
    for index, field in enumerate(coded, start=1):
        letter = get_column_letter(index)
        sheet.cell(row=1, column=index, value=field.name).font = Font(bold=True)
        for offset, (code, value) in enumerate(field.codes, start=2):
            sheet.cell(row=offset, column=index, value=code)
            label = code_label(value)
            if label != code:
                sheet.cell(row=offset, column=len(coded) + index, value=label)
        ranges[field.name] = (f"{quote_sheetname(CODES_SHEET)}!${letter}$2:"
                              f"${letter}${len(field.codes) + 1}")
    sheet.sheet_state = "hidden"
    return ranges


def _validation(column: str, field: RedcapField | None, ranges: dict[str, str]
                ) -> DataValidation | None:
    if field is None:
        return None
    if field.kind == "code":
        return DataValidation(type="list", formula1=ranges[field.name], allow_blank=True,
                              showErrorMessage=True, errorTitle=column,
                              error="choose one of the listed codes")
    if field.kind == "codes":
        return DataValidation(type="list", formula1='"' + ",".join(CHECKBOX) + '"',
                              allow_blank=True, showErrorMessage=True, errorTitle=column,
                              error="1 if it applies, 0 if not")
    if field.kind == "integer":
        minimum, maximum = field.bounds
        return DataValidation(type="whole", operator="between", formula1=str(minimum),
                              formula2=str(maximum), allow_blank=True, showErrorMessage=True,
                              errorTitle=column, error=f"a whole number from {minimum} to "
                                                       f"{maximum}")
    return None


def template_workbook() -> Workbook:
    """The template as an openpyxl workbook."""
    workbook = Workbook()
    sheet: Any = workbook.active
    sheet.title = RECORDS_SHEET
    columns = template_columns()
    sheet.append([column for column, _ in columns])
    header_fill = PatternFill("solid", fgColor="DDEBF7")
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        cell.fill = header_fill
    _explanations(workbook)
    ranges = _code_lists(workbook)
    last = TEMPLATE_ROWS + 1
    for index, (column, field) in enumerate(columns, start=1):
        letter = get_column_letter(index)
        sheet.column_dimensions[letter].width = max(12, len(column) + 2)
        validation = _validation(column, field, ranges)
        if validation is not None:
            sheet.add_data_validation(validation)
            validation.add(f"{letter}2:{letter}{last}")
        if field is not None and field.kind == "date":
            for row in range(2, last + 1):
                sheet.cell(row=row, column=index).number_format = DATE_FORMAT
    sheet.freeze_panes = "B2"
    workbook.properties.title = f"HER2+ MBC registry template, dictionary {DICTIONARY_VERSION}"
    return workbook


def template_xlsx() -> bytes:
    """The template as the bytes of an .xlsx file."""
    buffer = io.BytesIO()
    template_workbook().save(buffer)
    return buffer.getvalue()
