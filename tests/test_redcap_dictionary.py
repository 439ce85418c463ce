"""The REDCap data dictionary: generated from the record schema, committed, served."""

import csv
import io
import re
from datetime import date
from pathlib import Path

import pytest

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


# REDCap's Data Dictionary upload checks, as REDCap documents them ("Creating a Data Dictionary in
# REDCap", Vanderbilt University, column by column; REDCap KB RC-FD-08, Data Dictionary column
# reference): a file that breaks one is refused, or warned about, at upload.
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # lowercase letters, digits, underscore; a letter
FIELD_NAME_WARNING_ABOVE = 26  # REDCap warns above 26 characters (the hard limit is 100)
FORM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
FIELD_TYPES = {"text", "notes", "calc", "dropdown", "radio", "checkbox", "yesno", "truefalse",
               "file", "slider", "descriptive", "sql"}
VALIDATIONS = {"date_ymd": date.fromisoformat, "integer": int, "number": float}
CHOICE_CODE = re.compile(r"^[A-Za-z0-9_]+$")  # checkbox codes: letters, digits, underscore
# Columns REDCap adds to every export; a field may not take their names.
RESERVED = {"redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance",
            "redcap_data_access_group", "redcap_survey_identifier"}
BRANCH_REFERENCE = re.compile(r"\[([a-z][a-z0-9_]*)\]\s*=\s*'([^']*)'")


def redcap_upload_problems(text: str) -> list[str]:
    """What REDCap's Data Dictionary upload would refuse or warn about in this CSV."""
    problems = []
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != HEADER:
        return ["the header is not REDCap's 18 columns"]
    rows = list(reader)
    names = [row["Variable / Field Name"] for row in rows]
    forms = list(dict.fromkeys(row["Form Name"] for row in rows))
    if len(set(names)) != len(names):
        problems.append("duplicate field names")
    seen_forms: list[str] = []
    for row in rows:
        name, form, kind = row["Variable / Field Name"], row["Form Name"], row["Field Type"]
        if not FIELD_NAME.match(name) or len(name) > FIELD_NAME_WARNING_ABOVE:
            problems.append(f"{name}: field name breaks REDCap's rules")
        if name in RESERVED or any(name in (f"{f}_complete", f"{f}_timestamp") for f in forms):
            problems.append(f"{name}: reserved name")
        if not FORM_NAME.match(form):
            problems.append(f"{name}: form name {form!r}")
        if form not in seen_forms:
            seen_forms.append(form)
        elif seen_forms[-1] != form:
            problems.append(f"{name}: the rows of form {form} are not together")
        if kind not in FIELD_TYPES:
            problems.append(f"{name}: field type {kind!r}")
        if not row["Field Label"].strip():
            problems.append(f"{name}: no field label")
        choices = row["Choices, Calculations, OR Slider Labels"]
        if kind in ("radio", "dropdown", "checkbox"):
            pairs = [choice.split(",", 1) for choice in choices.split("|")]
            codes = [pair[0].strip() for pair in pairs]
            if any(len(pair) != 2 or not pair[1].strip() for pair in pairs):
                problems.append(f"{name}: choices are not 'code, label | ...'")
            if len(set(codes)) != len(codes) or not all(CHOICE_CODE.match(c) for c in codes):
                problems.append(f"{name}: choice codes")
        elif choices and kind not in ("calc", "slider", "sql"):
            problems.append(f"{name}: choices on a {kind} field")
        validation = row["Text Validation Type OR Show Slider Number"]
        if validation:
            if kind != "text" or validation not in VALIDATIONS:
                problems.append(f"{name}: validation {validation!r} on a {kind} field")
            for bound in ("Text Validation Min", "Text Validation Max"):
                try:
                    if row[bound]:
                        VALIDATIONS[validation](row[bound])
                except (KeyError, ValueError):
                    problems.append(f"{name}: {bound} is not a {validation}")
        elif row["Text Validation Min"] or row["Text Validation Max"]:
            problems.append(f"{name}: a range without a validation")
        for column in ("Identifier?", "Required Field?", "Matrix Ranking?"):
            if row[column] not in ("", "y"):
                problems.append(f"{name}: {column} must be y or blank")
        if row["Custom Alignment"] not in ("", "RV", "RH", "LV", "LH"):
            problems.append(f"{name}: custom alignment")
        by_name = {other["Variable / Field Name"]: other for other in rows}
        for field, value in BRANCH_REFERENCE.findall(row[HEADER[11]]):
            controller = by_name.get(field)
            codes = [choice.split(",")[0].strip() for choice in
                     (controller or {}).get(HEADER[5], "").split("|")]
            if controller is None or field == name or value not in codes:
                problems.append(f"{name}: branching logic refers to [{field}] = '{value}'")
    if rows and (names[0] != RECORD_ID or rows[0]["Field Type"] != "text"):
        problems.append("the first field must be the record id, a text field")
    return problems


def wording_problems(text: str) -> list[str]:
    """Labels, notes, section headers and choice labels a REDCap user would not read as plain
    words: a registry or REDCap field name, a code, "null", "absent", or an acronym of ours."""
    problems = []
    for row in csv.DictReader(io.StringIO(text)):
        name = row["Variable / Field Name"]
        choice_labels = [choice.split(",", 1)[1] for choice in
                         row[HEADER[5]].split("|") if "," in choice]
        for words in (row["Field Label"], row["Field Note"], row["Section Header"],
                      *choice_labels):
            for pattern in (r"\w+_\w+", r"\bnull\b", r"\babsent\b", r"\bHMAC\b",
                            r"\bsubject_id\b"):
                if re.search(pattern, words, re.I):
                    problems.append(f"{name}: {pattern} in {words!r}")
    return problems


def test_the_file_passes_redcaps_upload_checks_and_reads_in_plain_words():
    assert COMMITTED.read_text() == dictionary_csv()
    assert redcap_upload_problems(dictionary_csv()) == []
    assert wording_problems(dictionary_csv()) == []
    assert len(VERSION_FIELD) <= FIELD_NAME_WARNING_ABOVE


@pytest.mark.parametrize("change, found", [
    (("registry_dict_version", "registry_dictionary_version"), "field name"),
    (("her2_ihc", "HER2_ihc"), "field name"),
    (("1plus, 1+", "1 plus, 1+"), "choice codes"),
    (("[presentation] = 'recurrent'", "[presentation] = 'relapse'"), "branching logic"),
    (("integer,18,90", "integer,18,ninety"), "Text Validation Max"),
    ((",Sex,", ',"",'), "no field label"),
])
def test_the_upload_checks_catch_what_redcap_refuses(change, found):
    broken = dictionary_csv().replace(*change, 1)
    assert broken != dictionary_csv()
    assert any(found in problem for problem in redcap_upload_problems(broken))


def test_the_wording_check_catches_registry_language():
    broken = dictionary_csv().replace("(leave blank if no progression)", "; null = no progression")
    assert any("null" in problem for problem in wording_problems(broken))
    broken = dictionary_csv().replace("earliest progression date", "earliest progression_day")
    assert any("progression_day" in problem for problem in wording_problems(broken))


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


def test_every_rule_has_plain_words_on_the_form_and_only_there():
    # The form speaks plain words where the rule table speaks field names: every rule of the
    # table carries its plain words, so no rule goes unsaid at the site, and the field's label
    # does not say it a second time.
    assert all(rule.words for rule in RULES)
    by_name = {row["Variable / Field Name"]: row for row in rows()}
    for rule in RULES:
        row = by_name[redcap_name(rule.field)]
        assert rule.words in row["Field Note"]
        assert rule.words.lower() not in row["Field Label"].lower(), rule.field
    assert "Required when the disease status at the last follow-up is progressing" in \
        by_name["progression_date"]["Field Note"]
    assert "No for de novo disease" in by_name["prior_adjuvant_trastuzumab"]["Field Note"]


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


def test_projects_holding_the_former_version_field_name_still_sync():
    from registry.core.redcap_dictionary import metadata_version

    former = [{"field_name": "record_id", "field_annotation": ""},
              {"field_name": "registry_dictionary_version",
               "field_annotation": f"REGISTRY_DICTIONARY_VERSION={DICTIONARY_VERSION}"}]
    assert metadata_version(former) == DICTIONARY_VERSION
    assert metadata_version(former[:1]) is None
