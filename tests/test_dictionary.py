"""The published dictionary, and one source of truth: schema, dictionary and table agree."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Enum

from registry.core.derived import DERIVED_FIELDS
from registry.models import LIST_FIELDS, flag_column
from registry.models.record import Record
from registry.core.fields import Code, CodeList, WholeNumber
from registry.core.record import SUBMITTED_FIELDS, RecordSchema
from registry.core.dictionary import ERROR_CODES
from test_record_rules import RECORD_MD_CODES, RECORD_MD_REQUIRED

SCHEMA = RecordSchema()
# Columns the registry keeps for itself; submission_digest (batch resubmissions) may be absent.
BOOKKEEPING = {"id", "site_id", "subject_id", "version", "cell_key", "created_at", "updated_at",
               "submission_digest"}
# record.md: the ranges of the whole-number fields.
RECORD_MD_RANGES = {
    "met_dx_year": (1998, date.today().year), "age_at_met_dx": (18, 90),
    "primary_dx_day": (-18262, -1), "ecog_at_met_dx": (0, 4),
    "trastuzumab_start_day": (-30, 3650), "remission_start_day": (0, 18262),
    "lvef_baseline_pct": (10, 90), "lvef_nadir_pct": (5, 90), "last_followup_day": (0, 18262),
}
# record.md: fields required or allowed only under a condition on other fields.
CONDITIONAL = ("primary_dx_day", "primary_tumour_surgery", "trastuzumab_stop_day",
               "discontinuation_reason", "trastuzumab_resume_day", "progression_day",
               "cause_of_death")
# record.md: "NAACCR items 3827, 3850, 3855, 3915; ASCO/CAP 2018 HER2 testing; mCODE ECOG and
# disease status; RECIST response".
NAACCR_ITEMS = {"er_status": 3827, "her2_ihc": 3850, "her2_ish": 3855, "pr_status": 3915}
# Codes the spec names (record.md and privacy.md section 1).
SPEC_CODES = {
    "required", "unknown_field", "invalid_choice", "out_of_range", "invalid_type", "day_order",
    "not_allowed_here", "age_not_top_coded", "not_her2_positive", "not_in_remission",
    "remission_too_short", "prohibited_field", "date_not_allowed", "identifier_like",
}


@pytest.fixture()
def dictionary(client, make_token):  # noqa: ANN001
    """The dictionary as a coordinator reads it."""
    response = client.get("/api/v1/dictionary", headers=make_token("coordinator"))
    assert response.status_code == 200
    return response.json


@pytest.mark.parametrize("role", ["submitter", "coordinator", "steward"])
def test_every_role_reads_the_dictionary(client, make_site, make_token, role):
    site = make_site("TOR") if role == "submitter" else None
    response = client.get("/api/v1/dictionary", headers=make_token(role, site))
    assert response.status_code == 200
    assert response.json["fields"][0]["name"] == "subject_id"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}],
                         ids=["no token", "unknown token"])
def test_dictionary_needs_a_token(client, app, headers):
    response = client.get("/api/v1/dictionary", headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"


def test_dictionary_lists_every_schema_field_in_order(dictionary):
    names = [entry["name"] for entry in dictionary["fields"]]
    assert names == ["subject_id", *SUBMITTED_FIELDS]
    assert set(names) == set(SCHEMA.fields)
    assert all(entry["description"] for entry in dictionary["fields"])


def test_dictionary_types_choices_and_ranges(dictionary):
    fields = {entry["name"]: entry for entry in dictionary["fields"]}
    for name, codes in RECORD_MD_CODES.items():
        expected_type = "list of codes" if name in LIST_FIELDS else "code"
        assert (fields[name]["type"], fields[name]["choices"]) == (expected_type, list(codes))
    for name, (low, high) in RECORD_MD_RANGES.items():
        assert (fields[name]["type"], fields[name]["minimum"], fields[name]["maximum"]) == (
            "integer", low, high), name
    for name in ("trastuzumab_stop_day", "trastuzumab_resume_day", "progression_day"):
        assert fields[name]["type"] == "integer"
    assert fields["subject_id"]["type"] == "string" and fields["subject_id"]["pattern"]
    typed = set(RECORD_MD_CODES) | set(RECORD_MD_RANGES) | {
        "subject_id", "trastuzumab_stop_day", "trastuzumab_resume_day", "progression_day"}
    assert typed == set(fields)


def test_dictionary_required_and_required_when(dictionary):
    fields = {entry["name"]: entry for entry in dictionary["fields"]}
    assert {name for name, entry in fields.items() if entry["required"]} == {
        "subject_id", *RECORD_MD_REQUIRED}
    assert {name for name, entry in fields.items() if "required_when" in entry} == set(
        CONDITIONAL)
    assert "progressing" in fields["progression_day"]["required_when"]
    assert fields["ecog_at_met_dx"]["nullable"] and fields["progression_day"]["nullable"]


def test_dictionary_codings(dictionary):
    fields = {entry["name"]: entry for entry in dictionary["fields"]}
    for name, item in NAACCR_ITEMS.items():
        assert fields[name]["coding"]["system"] == "NAACCR"
        assert fields[name]["coding"]["item"] == item
    assert "ASCO/CAP 2018" in fields["her2_ihc"]["coding"]["guideline"]
    assert "ECOG" in fields["ecog_at_met_dx"]["coding"]["profile"]
    assert "mCODE" in fields["disease_status_last"]["coding"]["profile"]
    assert set(fields["disease_status_last"]["coding"]["map"]) == set(
        RECORD_MD_CODES["disease_status_last"])
    assert fields["best_response"]["coding"]["system"].startswith("RECIST")
    assert set(fields["best_response"]["coding"]["map"]) == set(RECORD_MD_CODES["best_response"])


def test_sex_and_raw_values_are_never_aggregate_dimensions(dictionary):
    dimensions = {entry["name"] for entry in dictionary["fields"] if entry["aggregate_dimension"]}
    assert "sex" not in dimensions and "subject_id" not in dimensions
    numeric = {entry["name"] for entry in dictionary["fields"] if entry["type"] == "integer"}
    assert not dimensions & numeric


def test_dictionary_derived_fields_and_inclusion(app, client, make_token, monkeypatch):
    monkeypatch.setitem(app.config, "REGISTRY_MIN_REMISSION_DAYS", 1095)
    body = client.get("/api/v1/dictionary", headers=make_token("steward")).json
    assert body["inclusion"]["min_remission_days"] == 1095
    assert [entry["name"] for entry in body["derived_fields"]] == list(DERIVED_FIELDS)
    for entry in body["derived_fields"]:
        if entry["type"] == "code":
            assert entry["categories"], entry["name"]
    periods = next(e for e in body["derived_fields"] if e["name"] == "met_dx_period")
    assert periods["categories"][0] == "1998_2002"
    assert str(date.today().year) in periods["categories"][-1] or \
        int(periods["categories"][-1][-4:]) >= date.today().year


def test_dictionary_publishes_the_error_codes(dictionary):
    assert dictionary["error_codes"] == ERROR_CODES


def _schema_codes() -> set[str]:
    """Every error code written in the schema modules."""
    source = "\n".join(Path(path).read_text() for path in (
        "registry/core/record.py", "registry/core/fields.py"))
    patterns = (r'Problem\(\s*"([a-z_]+)"', r'\.fail\(\s*"([a-z_]+)"',
                r'\bfail\(\s*"?[a-z_]+"?,\s*"([a-z_]+)"', r'above_code[:=][^"\n]*"([a-z_]+)"')
    return {code for pattern in patterns for code in re.findall(pattern, source)}


def test_every_error_code_is_documented():
    codes = _schema_codes()
    assert {"required", "day_order", "identifier_like", "age_not_top_coded"} <= codes  # sanity
    assert codes <= set(ERROR_CODES)
    assert SPEC_CODES <= set(ERROR_CODES)


# --- one source of truth: the records table has a column for each field and nothing else ---------

def _field_columns() -> set[str]:
    """The column of every submitted field, list code and derived field."""
    columns = set(DERIVED_FIELDS)
    for name, field in SCHEMA.fields.items():
        if isinstance(field, CodeList):
            columns |= {flag_column(name, code) for code in field.choices}
        else:
            columns.add(name)
    return columns


def test_every_column_is_a_field_a_flag_a_derived_field_or_bookkeeping():
    assert set(Record.__table__.columns.keys()) - BOOKKEEPING == _field_columns() - BOOKKEEPING


def test_every_field_code_and_derived_field_has_its_column():
    assert _field_columns() <= set(Record.__table__.columns.keys())
    assert {"id", "site_id", "subject_id", "version", "cell_key"} <= set(
        Record.__table__.columns.keys())


def test_list_fields_of_the_model_are_those_of_the_schema():
    lists = {name: field.choices for name, field in SCHEMA.fields.items()
             if isinstance(field, CodeList)}
    assert lists == LIST_FIELDS


def test_columns_enforce_the_schema_codes_and_nullability():
    columns = Record.__table__.columns
    for name, field in SCHEMA.fields.items():
        if isinstance(field, CodeList) or name == "subject_id":
            continue
        column = columns[name]
        assert column.nullable == (not field.required), name
        if isinstance(field, Code):
            assert isinstance(column.type, Enum) and tuple(column.type.enums) == field.choices
        else:
            assert isinstance(field, WholeNumber)
            assert column.type.python_type is int, name
    for name, spec in DERIVED_FIELDS.items():
        column = columns[name]
        if spec.kind == "code" and spec.categories:
            assert tuple(column.type.enums) == spec.categories, name
        expected_type = {"code": str, "boolean": bool, "integer": int}[spec.kind]
        assert column.type.python_type is expected_type, name
    assert {name for name in DERIVED_FIELDS if columns[name].nullable} == {
        "off_trastuzumab_days", "progressed_after_stop", "remission_before_stop_band"}
