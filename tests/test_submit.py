"""registry-submit's parts: the template, reading spreadsheets, dates, and the command's runs
(in this process; tests/test_site_tools.py runs it installed alone)."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from registry.core.deidentify import subject_id
from registry.core.redcap_dictionary import checkbox_column, redcap_fields
from registry.core.rules import RULES, OnlyWhen
from registry.core.template import (
    CHECKBOX, FIELDS_SHEET, RECORDS_SHEET, template_columns, template_xlsx,
)
from registry.site.redcap.config import ConfigError, SubmitConfig, load_config
from registry.site.submit.cli import main
from registry.site.submit.spreadsheet import normalise_date, read_spreadsheet
from tests.redcap_support import new_site, registry_server

SECRET = "x" * 40


def _workbook(tmp_path: Path) -> Workbook:
    path = tmp_path / "template.xlsx"
    path.write_bytes(template_xlsx())
    return load_workbook(path)


def test_template_has_a_column_per_site_side_field(tmp_path):
    sheet = _workbook(tmp_path)[RECORDS_SHEET]
    header = [cell.value for cell in sheet[1]]
    assert header == [column for column, _ in template_columns()]
    assert header[0] == "record_id" and "met_dx_date" in header
    assert not any(name.endswith("_day") or name == "met_dx_year" for name in header)
    for spec in redcap_fields():
        if spec.kind == "codes":
            assert all(checkbox_column(spec.name, code) in header for code, _ in spec.codes)
        else:
            assert spec.name in header


def test_template_offers_drop_downs_ranges_and_date_cells(tmp_path):
    workbook = _workbook(tmp_path)
    sheet = workbook[RECORDS_SHEET]
    letter = {cell.value: cell.column_letter for cell in sheet[1]}
    by_column: dict[str, object] = {}
    for validation in sheet.data_validations.dataValidation:
        for cell_range in str(validation.sqref).split():
            by_column[cell_range.split(":")[0].rstrip("0123456789")] = validation
    her2 = by_column[letter["her2_ihc"]]
    assert her2.type == "list"
    codes_sheet, cells = her2.formula1.split("!")
    listed = [row[0].value for row in workbook[codes_sheet.strip("'")][
        cells.replace("$", "")]]
    assert listed == ["0", "1plus", "2plus", "3plus", "not_done", "unknown"]
    box = by_column[letter[checkbox_column("metastatic_sites", "bone")]]
    assert box.formula1 == '"' + ",".join(CHECKBOX) + '"'
    age = by_column[letter["age_at_met_dx"]]
    assert (age.type, age.formula1, age.formula2) == ("whole", "18", "90")
    assert sheet[f"{letter['progression_date']}2"].number_format == "yyyy-mm-dd"
    assert sheet[f"{letter['age_at_met_dx']}2"].number_format == "General"
    # ... and so for every column: a drop-down of its codes for each coded field, 1/0 for each
    # checkbox, the range of each whole number, a date format on each date, down the sheet.
    for column, spec in template_columns()[1:]:
        validation = by_column.get(letter[column])
        assert validation is not None or spec.kind == "date", column
        if spec.kind == "code":
            sheet_name, cells = validation.formula1.split("!")
            listed = [row[0].value for row in workbook[sheet_name.strip("'")][
                cells.replace("$", "")]]
            assert (validation.type, listed) == ("list", [code for code, _ in spec.codes])
        elif spec.kind == "codes":
            assert (validation.type, validation.formula1) == ("list", '"1,0"'), column
        elif spec.kind == "integer":
            assert (validation.type, validation.formula1, validation.formula2) == (
                "whole", *map(str, spec.bounds)), column
        else:
            for row in (2, 2001):
                assert sheet[f"{letter[column]}{row}"].number_format == "yyyy-mm-dd", column
        if validation is not None:
            assert str(validation.sqref) == f"{letter[column]}2:{letter[column]}2001", column


def test_template_explains_every_field_and_rule(tmp_path):
    sheet = _workbook(tmp_path)[FIELDS_SHEET]
    rows = {row[0]: row for row in sheet.iter_rows(min_row=2, values_only=True) if row[0]}
    assert {spec.name for spec in redcap_fields()} <= set(rows)
    assert "must be no when presentation is de_novo" in rows["prior_adjuvant_trastuzumab"][6]
    assert "on or after trastuzumab_start_date" in rows["remission_start_date"][6]
    for rule in RULES:
        if isinstance(rule, OnlyWhen):
            name = next(spec.name for spec in redcap_fields()
                        if spec.registry_name == rule.field)
            assert rows[name][7], name  # "asked only if" is filled from the rule table


def test_template_is_served_to_any_role(client, site_a, coordinator):
    for headers in (site_a, coordinator):
        response = client.get("/api/v1/dictionary/template.xlsx", headers=headers)
        assert response.status_code == 200
        assert response.mimetype.endswith("spreadsheetml.sheet")
        workbook = load_workbook(io.BytesIO(response.data))
        assert workbook.sheetnames[:2] == [RECORDS_SHEET, FIELDS_SHEET]
    assert client.get("/api/v1/dictionary/template.xlsx").status_code == 401


@pytest.mark.parametrize("value, order, expected", [
    ("2019-04-03", "dmy", "2019-04-03"),
    ("2019-04-03 10:15", "dmy", "2019-04-03"),
    ("03/04/2019", "dmy", "2019-04-03"),
    ("03.04.2019", "dmy", "2019-04-03"),
    ("03/04/2019", "mdy", "2019-03-04"),
    ("2019/04/03", "mdy", "2019-04-03"),
    ("43558", "dmy", "2019-04-03"),  # an Excel serial date, as a CSV holds it
    (43558.0, "dmy", "2019-04-03"),
    (datetime(2019, 4, 3, 0, 0), "dmy", "2019-04-03"),
    (date(2019, 4, 3), "mdy", "2019-04-03"),
    ("03/04/19", "dmy", "03/04/19"),  # two-digit year: never guessed, reported later
    ("31/02/2019", "dmy", "31/02/2019"),
    ("unknown", "dmy", "unknown"),
])
def test_dates_in_common_spreadsheet_forms(value, order, expected):
    assert normalise_date(value, order) == expected


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_only_the_dictionarys_columns_are_read(tmp_path):
    path = _csv(tmp_path / "export.csv", [
        {"record_id": "A1", "redcap_event_name": "baseline_arm_1", "patient_name": "Roe",
         "MRN": "123", "site_notes": "x", "met_dx_date": "01/02/2015", "diagnosis_complete": "2",
         "redcap_repeat_instance": ""},
        {"record_id": "A1", "redcap_event_name": "follow_up_arm_1", "patient_name": "",
         "MRN": "", "site_notes": "", "met_dx_date": "", "diagnosis_complete": "",
         "redcap_repeat_instance": "2"},
        {"record_id": "", "redcap_event_name": "", "patient_name": "", "MRN": "",
         "site_notes": "", "met_dx_date": "", "diagnosis_complete": "",
         "redcap_repeat_instance": ""},  # a blank line
        {"record_id": "", "redcap_event_name": "x", "patient_name": "", "MRN": "",
         "site_notes": "", "met_dx_date": "", "diagnosis_complete": "",
         "redcap_repeat_instance": ""}])
    sheet = read_spreadsheet(path, "dmy")
    assert sheet.dropped_columns == 4 and sheet.dropped_identifier_columns == 2
    assert sheet.row_numbers == {"A1": [2, 3]} and sheet.rows_without_id == [5]
    first, second = sheet.rows_of["A1"]
    assert first["met_dx_date"] == "2015-02-01"
    assert not {"patient_name", "mrn", "site_notes"} & set(first)
    assert second["redcap_repeat_instance"] == 2


def test_a_file_without_record_id_is_refused(tmp_path, monkeypatch):
    path = _csv(tmp_path / "other.csv", [{"name": "x", "met_dx_date": "2015-01-01"}])
    monkeypatch.setenv("REGISTRY_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("REGISTRY_TOKEN", "t" * 20)
    monkeypatch.setenv("REGISTRY_SITE_SECRET", SECRET)
    report = tmp_path / "report.json"
    assert main([str(path), "--report", str(report)]) == 2
    assert "no record_id column" in json.loads(report.read_text())["failure"]


def test_submit_settings_need_no_redcap(monkeypatch):
    environ = {"REGISTRY_URL": "http://registry", "REGISTRY_TOKEN": "t",
               "REGISTRY_SITE_SECRET": SECRET}
    config = load_config(None, environ=environ, kind=SubmitConfig)
    assert config.date_order == "dmy"
    with pytest.raises(ConfigError, match="date_order"):
        load_config(None, environ=environ, kind=SubmitConfig, date_order="ydm")
    with pytest.raises(ConfigError, match="site_secret|REGISTRY_SITE_SECRET"):
        load_config(None, environ={**environ, "REGISTRY_SITE_SECRET": "short"},
                    kind=SubmitConfig)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry served on loopback with its own database."""
    with registry_server(tmp_path_factory.mktemp("registry")) as served:
        yield served


def test_template_csv_round_trip_and_report(registry, tmp_path, monkeypatch, capsys):
    app, capture, url = registry
    monkeypatch.setenv("REGISTRY_URL", url)
    monkeypatch.setenv("REGISTRY_TOKEN", new_site(app, "CSVT"))
    monkeypatch.setenv("REGISTRY_SITE_SECRET", SECRET)
    template = tmp_path / "template.csv"
    assert main(["template", str(template)]) == 0
    header = template.read_text().strip().split(",")
    row = dict.fromkeys(header, "")
    row.update({"record_id": "LOCALX-1", "met_dx_date": "40544",  # 2011-01-01, Excel serial
                "age_at_met_dx": "52", "sex": "female", "her2_ihc": "3plus",
                "her2_ish": "not_done", "er_status": "positive", "pr_status": "negative",
                "presentation": "de_novo", "prior_adjuvant_trastuzumab": "no",
                "metastatic_sites___bone": "1", "first_line_anti_her2": "trastuzumab",
                "first_line_chemotherapy": "taxane", "endocrine_maintenance": "yes",
                "trastuzumab_start_date": "15/01/2011", "best_response": "complete_response",
                "remission_start_date": "2011-06-01", "maintenance_status": "ongoing",
                "cardiac_event": "none", "disease_status_last": "ned",
                "last_followup_date": "01/06/2015", "vital_status": "alive"})
    broken = {**row, "record_id": "LOCALX-2", "vital_status": "dead", "sex": "femme"}
    with template.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=header).writerows([row, broken])
    report_path = tmp_path / "report.json"
    assert main([str(template), "--report", str(report_path)]) == 1
    report = json.loads(report_path.read_text())
    assert report["counts"]["created"] == 1 and report["counts"]["invalid"] == 1
    [refused] = [line for line in report["records"] if line["outcome"] == "invalid"]
    assert refused["rows"] == [3]
    assert {(error["field"], error["code"]) for error in refused["errors"]} == {
        ("sex", "invalid_choice"), ("cause_of_death", "required")}
    assert "femme" not in report_path.read_text() and "LOCALX" not in report_path.read_text()
    assert "row 3: sex: invalid_choice" in capsys.readouterr().err
    created = next(line for line in report["records"] if line["outcome"] == "created")
    assert created["subject_id"] == subject_id(SECRET, "LOCALX-1")
    assert main([str(template), "--report", str(report_path)]) == 1
    assert json.loads(report_path.read_text())["counts"]["unchanged"] == 1


# A valid patient in the template's columns (de novo, ongoing maintenance, 1400 days in remission).
ONE_PATIENT = {
    "met_dx_date": "2012-03-01", "age_at_met_dx": "48", "sex": "female", "her2_ihc": "3plus",
    "her2_ish": "amplified", "er_status": "positive", "pr_status": "positive",
    "presentation": "de_novo", "prior_adjuvant_trastuzumab": "no", "metastatic_sites___bone": "1",
    "first_line_anti_her2": "trastuzumab", "first_line_chemotherapy": "taxane",
    "endocrine_maintenance": "yes", "trastuzumab_start_date": "2012-03-10",
    "best_response": "complete_response", "remission_start_date": "2012-09-01",
    "maintenance_status": "ongoing", "cardiac_event": "none", "disease_status_last": "ned",
    "last_followup_date": "2016-01-01", "vital_status": "alive"}


def _filled_template(path: Path, *rows: dict[str, str]) -> Path:
    """The template written by `registry-submit template` as CSV, with `rows` typed in."""
    assert main(["template", str(path)]) == 0
    header = path.read_text().strip().split(",")
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=header).writerows(
            {**dict.fromkeys(header, ""), **row} for row in rows)
    return path


def test_records_are_checked_under_the_registrys_published_threshold(registry, tmp_path,
                                                                     monkeypatch):
    app, _, url = registry
    monkeypatch.setenv("REGISTRY_URL", url)
    monkeypatch.setenv("REGISTRY_TOKEN", new_site(app, "THRS"))
    monkeypatch.setenv("REGISTRY_SITE_SECRET", SECRET)
    monkeypatch.setitem(app.config, "REGISTRY_MIN_REMISSION_DAYS", 365)
    template = _filled_template(tmp_path / "short.csv", {
        **ONE_PATIENT, "record_id": "SHORT-1", "met_dx_date": "2018-01-01",
        "trastuzumab_start_date": "2018-01-10", "remission_start_date": "2018-07-01",
        "last_followup_date": "2019-11-01"})  # 488 days in remission
    report = tmp_path / "report.json"
    assert main([str(template), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["counts"]["created"] == 1
    # the site's threshold did not leak into this process's other validations
    from registry.core.record import remission_threshold

    assert remission_threshold() == 730


def test_a_run_at_a_terminal_shows_progress_bars_without_values(registry, tmp_path,
                                                                monkeypatch, capsys):
    app, _, url = registry
    monkeypatch.setenv("REGISTRY_URL", url)
    monkeypatch.setenv("REGISTRY_TOKEN", new_site(app, "PROG"))
    monkeypatch.setenv("REGISTRY_SITE_SECRET", SECRET)
    template = _filled_template(tmp_path / "progress.csv",
                                {**ONE_PATIENT, "record_id": "PROGX-1"})
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([str(template), "--report", str(tmp_path / "report.json")]) == 0
    shown = capsys.readouterr().err
    assert "dry run: 100%" in shown and "registry: 100%" in shown and "1/1" in shown
    assert "PROGX" not in shown and "2012" not in shown
