"""The REDCap data dictionary: generated from the record schema, committed, served."""

import csv
import io
import re
from pathlib import Path

from registry.core.redcap_dictionary import (
    HEADER, MET_DX_DATE, RECORD_ID, VERSION_FIELD, dictionary_csv, redcap_code,
    redcap_fields, redcap_name,
)
from registry.core.record import DICTIONARY_VERSION, RecordFieldsSchema
from registry.core.rules import RULES, OnlyWhen

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "registry" / "site" / "redcap" / "registry_data_dictionary.csv"


def rows():
    return list(csv.DictReader(io.StringIO(dictionary_csv())))


def test_committed_csv_is_what_the_code_generates():
    assert COMMITTED.read_text() == dictionary_csv(), (
        "registry/site/redcap/registry_data_dictionary.csv is stale: run `registry redcap "
        "dictionary registry/site/redcap/registry_data_dictionary.csv` and commit it")


def test_header_is_redcaps_exact_18_columns():
    header = next(csv.reader(io.StringIO(dictionary_csv())))
    assert tuple(header) == HEADER and len(header) == 18


def test_every_registry_field_has_its_redcap_field_and_back():
    schema_fields = set(RecordFieldsSchema().fields)
    by_name = {row["Variable / Field Name"]: row for row in rows()}
    mapped = {field.registry_name: field.name for field in redcap_fields()}
    assert set(mapped) == schema_fields
    for registry_name, site_name in mapped.items():
        assert site_name in by_name, registry_name
    extra = set(by_name) - set(mapped.values())
    assert extra == {RECORD_ID, VERSION_FIELD}


def test_dates_are_date_ymd_identifiers_and_days_become_dates():
    by_name = {row["Variable / Field Name"]: row for row in rows()}
    for name in RecordFieldsSchema().fields:
        if name.endswith("_day"):
            assert name not in by_name
            row = by_name[name.removesuffix("_day") + "_date"]
            assert row["Text Validation Type OR Show Slider Number"] == "date_ymd"
            assert row["Identifier?"] == "y"
    assert by_name[MET_DX_DATE]["Text Validation Type OR Show Slider Number"] == "date_ymd"
    assert by_name[MET_DX_DATE]["Identifier?"] == "y"
    assert by_name[RECORD_ID]["Identifier?"] == "y"
    assert "met_dx_year" not in by_name
    identifiers = {name for name, row in by_name.items() if row["Identifier?"] == "y"}
    assert identifiers == {RECORD_ID, MET_DX_DATE} | {
        name for name in by_name if name.endswith("_date")}


def test_choice_codes_are_stable_and_allowed_by_redcap():
    assert redcap_code("3+") == "3plus" and redcap_code("not_done") == "not_done"
    for field in redcap_fields():
        codes = [code for code, _ in field.codes]
        assert len(set(codes)) == len(codes), field.name
        assert all(re.fullmatch(r"[A-Za-z0-9_]+", code) for code in codes), field.name
    her2 = {row["Variable / Field Name"]: row for row in rows()}["her2_ihc"]
    assert "3plus, 3+" in her2["Choices, Calculations, OR Slider Labels"]


def test_lists_are_checkboxes_and_codes_radios():
    schema = RecordFieldsSchema().fields
    by_name = {row["Variable / Field Name"]: row for row in rows()}
    for field in redcap_fields():
        expected = {"codes": "checkbox", "code": "radio", "integer": "text",
                    "date": "text"}[field.kind]
        assert by_name[field.name]["Field Type"] == expected
        assert (by_name[field.name]["Required Field?"] == "y") == schema[
            field.registry_name].required


def test_branching_logic_comes_from_the_rule_table():
    # Fields that must be absent in some records are hidden there; progression_day is required
    # when progressing but may be given whatever the last status, so it is never hidden.
    by_name = {row["Variable / Field Name"]: row for row in rows()}
    shown = {row["Variable / Field Name"] for row in rows()
             if row["Branching Logic (Show field only if...)"]}
    assert shown == {redcap_name(rule.field) for rule in RULES if isinstance(rule, OnlyWhen)}
    assert shown == {"primary_dx_date", "primary_tumour_surgery", "trastuzumab_stop_date",
                     "discontinuation_reason", "trastuzumab_resume_date", "cause_of_death"}
    assert by_name["trastuzumab_resume_date"][
        "Branching Logic (Show field only if...)"] == "[maintenance_status] = 'interrupted_resumed'"
    assert by_name["trastuzumab_stop_date"]["Branching Logic (Show field only if...)"] == (
        "[maintenance_status] = 'discontinued' or [maintenance_status] = 'interrupted_resumed'")
    schema = RecordFieldsSchema().fields
    for rule in RULES:
        if isinstance(rule, OnlyWhen):
            assert set(rule.when.values) <= set(schema[rule.when.field].choices)


def test_field_notes_carry_the_rule_text():
    by_name = {row["Variable / Field Name"]: row for row in rows()}
    assert "must be no when presentation is de_novo" in \
        by_name["prior_adjuvant_trastuzumab"]["Field Note"]
    assert "required when disease_status_last is progressing" in \
        by_name["progression_date"]["Field Note"]


def test_version_marker_carries_the_dictionary_version():
    by_name = {row["Variable / Field Name"]: row for row in rows()}
    assert by_name[VERSION_FIELD]["Field Type"] == "descriptive"
    assert by_name[VERSION_FIELD]["Field Annotation"] == \
        f"REGISTRY_DICTIONARY_VERSION={DICTIONARY_VERSION}"


def test_endpoint_serves_the_csv_to_every_role(client, site_a, coordinator, steward):
    for headers in (site_a, coordinator, steward):
        response = client.get("/api/v1/dictionary/redcap.csv", headers=headers)
        assert response.status_code == 200
        assert response.mimetype == "text/csv"
        assert response.get_data(as_text=True) == dictionary_csv()
    assert client.get("/api/v1/dictionary/redcap.csv").status_code == 401


def test_cli_writes_the_dictionary(app, tmp_path):
    target = tmp_path / "dictionary.csv"
    result = app.test_cli_runner().invoke(args=["redcap", "dictionary", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == dictionary_csv()
