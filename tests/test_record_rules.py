"""Every rule of record.md, through the API: accepted records, and each rejection with its code.

A refused record answers 422 problem+json with exactly one {field, code, message} per problem and
never repeats the offending value (privacy.md section 1); the values below are chosen distinctive
so that a repeat would be found.
"""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest
from marshmallow import ValidationError, post_load

from conftest import EXAMPLE_RECORD
from registry.core import vocabulary as v
from registry.core.fields import Code, CodeList, problems_to_list
from registry.core.record import PutRecordSchema, RecordSchema
from registry.services.intake.synthetic import synthetic_record
from rejections import (
    ABSENT, DE_NOVO, DEAD, INTERRUPTED, ONGOING, VIAS, assert_rejected, changed, submit,
)

THIS_YEAR = date.today().year

# record.md, "Submitted fields": the allowed codes of each enum field, copied from the spec.
RECORD_MD_CODES: dict[str, tuple[str, ...]] = {
    "sex": ("female", "male", "unknown"),
    "her2_ihc": ("0", "1+", "2+", "3+", "not_done", "unknown"),
    "her2_ish": ("amplified", "not_amplified", "equivocal", "not_done", "unknown"),
    "her2_tested_on": ("primary", "metastasis", "both", "unknown"),
    "er_status": ("positive", "negative", "unknown"),
    "pr_status": ("positive", "negative", "unknown"),
    "histology": ("ductal", "lobular", "mixed", "other", "unknown"),
    "presentation": ("de_novo", "recurrent"),
    "prior_adjuvant_trastuzumab": ("yes", "no", "unknown"),
    "metastatic_sites": ("bone", "liver", "lung", "pleura", "cns", "distant_lymph_nodes",
                         "skin_soft_tissue", "other"),
    "lesion_count": ("single", "two_to_five", "more_than_five", "unknown"),
    "first_line_anti_her2": ("trastuzumab", "trastuzumab_pertuzumab", "other"),
    "first_line_chemotherapy": ("taxane", "vinorelbine", "capecitabine", "anthracycline", "other",
                                "none"),
    "later_anti_her2": ("t_dm1", "t_dxd", "lapatinib", "tucatinib", "neratinib", "other"),
    "local_therapy_metastases": ("surgery", "radiotherapy", "ablation"),
    "primary_tumour_surgery": ("yes", "no"),
    "endocrine_maintenance": ("yes", "no", "not_applicable"),
    "best_response": ("complete_response", "ned_after_local_therapy", "partial_response",
                      "stable_disease", "progressive_disease", "not_evaluable"),
    "response_assessment": ("ct", "pet_ct", "mri", "bone_scan", "clinical"),
    "maintenance_status": ("ongoing", "discontinued", "interrupted_resumed"),
    "discontinuation_reason": ("remission_physician_decision", "patient_preference",
                               "cardiac_toxicity", "other_toxicity", "access_or_cost",
                               "progression", "other", "unknown"),
    "cardiac_event": ("none", "asymptomatic_lvef_decline", "heart_failure", "unknown"),
    "disease_status_last": ("ned", "stable", "responding", "progressing", "unknown"),
    "vital_status": ("alive", "dead"),
    "cause_of_death": ("breast_cancer", "other", "unknown"),
}
# record.md: the fields marked "yes" in the required column.
RECORD_MD_REQUIRED = (
    "met_dx_year", "age_at_met_dx", "sex", "her2_ihc", "her2_ish", "er_status", "pr_status",
    "presentation", "prior_adjuvant_trastuzumab", "metastatic_sites", "first_line_anti_her2",
    "first_line_chemotherapy", "endocrine_maintenance", "trastuzumab_start_day", "best_response",
    "remission_start_day", "maintenance_status", "cardiac_event", "disease_status_last",
    "last_followup_day", "vital_status",
)
OPTIONAL = ("her2_tested_on", "histology", "lesion_count", "ecog_at_met_dx", "later_anti_her2",
            "local_therapy_metastases", "response_assessment", "lvef_baseline_pct",
            "lvef_nadir_pct", "progression_day")


def _case(name: str, changes: dict[str, Any], *expected: tuple[str, str],
          hidden: tuple[Any, ...] = ()) -> Any:
    return pytest.param(changes, list(expected), hidden, id=name)


# Valid records (record.md's boundaries and variants): each must be accepted.
ACCEPTED = [
    pytest.param({}, id="the example of record.md"),
    pytest.param({name: ABSENT for name in OPTIONAL}, id="optional fields absent"),
    pytest.param({name: None for name in OPTIONAL}, id="optional fields null"),
    pytest.param({"ecog_at_met_dx": None}, id="ecog null = unknown"),
    pytest.param({"ecog_at_met_dx": 0}, id="ecog 0"),
    pytest.param({"ecog_at_met_dx": 4}, id="ecog 4"),
    pytest.param({"age_at_met_dx": 90}, id="age 90 (90 or older)"),
    pytest.param({"age_at_met_dx": 18}, id="age 18"),
    pytest.param({"met_dx_year": 1998}, id="met_dx_year 1998"),
    pytest.param({"met_dx_year": THIS_YEAR}, id="met_dx_year this year"),
    pytest.param({"primary_dx_day": -18262}, id="primary_dx_day -18262"),
    pytest.param({"primary_dx_day": -1}, id="primary_dx_day -1"),
    pytest.param({**DE_NOVO, "primary_tumour_surgery": "yes"}, id="de novo with surgery"),
    pytest.param(DE_NOVO, id="de novo without surgery"),
    pytest.param(ONGOING, id="ongoing"),
    pytest.param(INTERRUPTED, id="interrupted and resumed"),
    pytest.param(DEAD, id="dead with a cause"),
    pytest.param({"er_status": "negative", "pr_status": "negative",
                  "endocrine_maintenance": "not_applicable"}, id="ER and PR negative"),
    pytest.param({"er_status": "positive", "endocrine_maintenance": "not_applicable"},
                 id="not_applicable with ER positive"),
    pytest.param({"her2_ihc": "0", "her2_ish": "amplified"}, id="HER2 by ISH only"),
    pytest.param({"her2_ihc": "3+", "her2_ish": "not_amplified"}, id="HER2 by IHC only"),
    pytest.param({"best_response": "ned_after_local_therapy"}, id="NED after local therapy"),
    pytest.param({"lvef_baseline_pct": 61, "lvef_nadir_pct": 61}, id="LVEF nadir = baseline"),
    pytest.param({"lvef_baseline_pct": 10, "lvef_nadir_pct": 5}, id="LVEF lowest values"),
    pytest.param({"lvef_baseline_pct": 90, "lvef_nadir_pct": 90}, id="LVEF highest values"),
    pytest.param({"lvef_baseline_pct": ABSENT, "lvef_nadir_pct": 40}, id="LVEF nadir alone"),
    pytest.param({"remission_start_day": 3300 - 730}, id="remission of exactly 730 days"),
    pytest.param({"progression_day": 930, "disease_status_last": "progressing"},
                 id="progression after 730 days"),
    pytest.param({"remission_start_day": 14}, id="remission starts with trastuzumab"),
    pytest.param({"trastuzumab_start_day": -30}, id="trastuzumab start -30"),
    pytest.param({"trastuzumab_start_day": 3650, "remission_start_day": 3650,
                  "trastuzumab_stop_day": 3651, "last_followup_day": 4380},
                 id="trastuzumab start 3650"),
    pytest.param({"last_followup_day": 18262, "remission_start_day": 18262 - 730},
                 id="last follow-up 18262"),
    pytest.param({"trastuzumab_stop_day": 3300}, id="stop on the last follow-up"),
    pytest.param({"later_anti_her2": ABSENT, "local_therapy_metastases": []},
                 id="empty and absent lists"),
    pytest.param({"metastatic_sites": list(v.METASTATIC_SITES),
                  "later_anti_her2": list(v.LATER_ANTI_HER2),
                  "local_therapy_metastases": list(v.LOCAL_THERAPY_METASTASES)},
                 id="every code of every list"),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("changes", ACCEPTED)
def test_valid_record_is_accepted(client, site_a, changes, via):
    record = changed(EXAMPLE_RECORD, changes)
    response = submit(client, site_a, record, via)
    assert response.status_code == 201, response.json
    stored = client.get(f"/api/v1/records/{record['subject_id']}", headers=site_a).json
    for name, value in record.items():
        if value is None:
            assert stored[name] in (None, [])
        elif isinstance(value, list):
            assert sorted(stored[name]) == sorted(value)
        else:
            assert stored[name] == value


TYPES = [
    _case("year as a string", {"met_dx_year": "2011"}, ("met_dx_year", "invalid_type"),
          hidden=("2011",)),
    _case("year as a fraction", {"met_dx_year": 2011.5}, ("met_dx_year", "invalid_type"),
          hidden=(2011.5,)),
    _case("age as a fraction", {"age_at_met_dx": 52.5}, ("age_at_met_dx", "invalid_type"),
          hidden=(52.5,)),
    _case("age as a boolean", {"age_at_met_dx": True}, ("age_at_met_dx", "invalid_type"),
          hidden=(True,)),
    _case("age as a list", {"age_at_met_dx": [52]}, ("age_at_met_dx", "invalid_type")),
    _case("code as a number", {"sex": 7731}, ("sex", "invalid_type"), hidden=(7731,)),
    _case("code as a boolean", {"vital_status": False}, ("vital_status", "invalid_type"),
          hidden=(False,)),
    _case("code as an object", {"her2_ihc": {"score": "3+"}}, ("her2_ihc", "invalid_type"),
          hidden=("score",)),
    _case("list as a string", {"metastatic_sites": "bone"}, ("metastatic_sites", "invalid_type")),
    _case("list item as a number", {"later_anti_her2": [4417]},
          ("later_anti_her2", "invalid_choice"), hidden=(4417,)),
    _case("ecog as a string", {"ecog_at_met_dx": "1"}, ("ecog_at_met_dx", "invalid_type")),
    _case("day as a fraction", {"trastuzumab_start_day": 14.25},
          ("trastuzumab_start_day", "invalid_type"), hidden=(14.25,)),
    _case("day as a word", {"progression_day": "never-xq"}, ("progression_day", "invalid_type"),
          hidden=("never-xq",)),
    _case("percent with a sign", {"lvef_baseline_pct": "62%"},
          ("lvef_baseline_pct", "invalid_type"), hidden=("62%",)),
]
RANGES = [
    _case("met_dx_year 1997", {"met_dx_year": 1997}, ("met_dx_year", "out_of_range"),
          hidden=(1997,)),
    _case("met_dx_year next year", {"met_dx_year": THIS_YEAR + 1},
          ("met_dx_year", "out_of_range"), hidden=(THIS_YEAR + 1,)),
    _case("age 17", {"age_at_met_dx": 17}, ("age_at_met_dx", "out_of_range"), hidden=(17,)),
    _case("age 91", {"age_at_met_dx": 91}, ("age_at_met_dx", "age_not_top_coded"),
          hidden=(91,)),
    _case("age 104", {"age_at_met_dx": 104}, ("age_at_met_dx", "age_not_top_coded"),
          hidden=(104,)),
    _case("primary_dx_day 0", {"primary_dx_day": 0}, ("primary_dx_day", "out_of_range")),
    _case("primary_dx_day -18263", {"primary_dx_day": -18263},
          ("primary_dx_day", "out_of_range"), hidden=(-18263,)),
    _case("ecog 5", {"ecog_at_met_dx": 5}, ("ecog_at_met_dx", "out_of_range")),
    _case("ecog -1", {"ecog_at_met_dx": -1}, ("ecog_at_met_dx", "out_of_range")),
    _case("trastuzumab start -31", {"trastuzumab_start_day": -31},
          ("trastuzumab_start_day", "out_of_range"), hidden=(-31,)),
    _case("trastuzumab start 3651", {"trastuzumab_start_day": 3651},
          ("trastuzumab_start_day", "out_of_range"), hidden=(3651,)),
    _case("remission start -7", {"remission_start_day": -7},
          ("remission_start_day", "out_of_range"), hidden=(-7,)),
    _case("remission start 18263", {"remission_start_day": 18263},
          ("remission_start_day", "out_of_range"), hidden=(18263,)),
    _case("last follow-up -3", {"last_followup_day": -3}, ("last_followup_day", "out_of_range"),
          hidden=(-3,)),
    _case("last follow-up 18263", {"last_followup_day": 18263},
          ("last_followup_day", "out_of_range"), hidden=(18263,)),
    _case("LVEF baseline 9", {"lvef_baseline_pct": 9}, ("lvef_baseline_pct", "out_of_range")),
    _case("LVEF baseline 91", {"lvef_baseline_pct": 91}, ("lvef_baseline_pct", "out_of_range"),
          hidden=(91,)),
    _case("LVEF nadir 4", {"lvef_nadir_pct": 4}, ("lvef_nadir_pct", "out_of_range")),
    _case("LVEF nadir 91", {"lvef_nadir_pct": 91, "lvef_baseline_pct": ABSENT},
          ("lvef_nadir_pct", "out_of_range"), hidden=(91,)),
    _case("stop day beyond 50 years", {"trastuzumab_stop_day": 18263},
          ("trastuzumab_stop_day", "out_of_range"), hidden=(18263,)),
    _case("progression beyond 50 years", {"progression_day": 18263},
          ("progression_day", "out_of_range"), hidden=(18263,)),
]
LISTS = [
    _case("no metastatic site", {"metastatic_sites": []}, ("metastatic_sites", "required")),
    _case("a site twice", {"metastatic_sites": ["bone", "liver", "bone"]},
          ("metastatic_sites", "duplicate_item")),
    _case("an agent twice", {"later_anti_her2": ["t_dxd", "t_dxd"]},
          ("later_anti_her2", "duplicate_item")),
    _case("a local therapy twice", {"local_therapy_metastases": ["surgery", "surgery"]},
          ("local_therapy_metastases", "duplicate_item")),
    _case("an unknown site", {"metastatic_sites": ["bone", "spleen-xq"]},
          ("metastatic_sites", "invalid_choice"), hidden=("spleen-xq",)),
    _case("an unknown agent", {"later_anti_her2": ["margetuximab-xq"]},
          ("later_anti_her2", "invalid_choice"), hidden=("margetuximab-xq",)),
    _case("an unknown local therapy", {"local_therapy_metastases": ["cyberknife-xq"]},
          ("local_therapy_metastases", "invalid_choice"), hidden=("cyberknife-xq",)),
    _case("a null item", {"metastatic_sites": ["bone", None]},
          ("metastatic_sites", "invalid_choice")),
]
CONDITIONS = [
    _case("recurrent without primary_dx_day", {"primary_dx_day": ABSENT},
          ("primary_dx_day", "required")),
    _case("recurrent with primary_dx_day null", {"primary_dx_day": None},
          ("primary_dx_day", "required")),
    _case("de novo with primary_dx_day", {**DE_NOVO, "primary_dx_day": -1733},
          ("primary_dx_day", "not_allowed_here"), hidden=(-1733,)),
    _case("de novo after adjuvant trastuzumab", {**DE_NOVO, "prior_adjuvant_trastuzumab": "yes"},
          ("prior_adjuvant_trastuzumab", "not_allowed_here")),
    _case("de novo, adjuvant trastuzumab unknown",
          {**DE_NOVO, "prior_adjuvant_trastuzumab": "unknown"},
          ("prior_adjuvant_trastuzumab", "not_allowed_here")),
    _case("primary surgery in recurrent disease", {"primary_tumour_surgery": "yes"},
          ("primary_tumour_surgery", "not_allowed_here")),
    _case("discontinued without stop day",
          {"trastuzumab_stop_day": ABSENT}, ("trastuzumab_stop_day", "required")),
    _case("interrupted without stop day", {**INTERRUPTED, "trastuzumab_stop_day": ABSENT},
          ("trastuzumab_stop_day", "required")),
    _case("ongoing with a stop day", {**ONGOING, "trastuzumab_stop_day": 1517},
          ("trastuzumab_stop_day", "not_allowed_here"), hidden=(1517,)),
    _case("ongoing with a reason", {**ONGOING, "discontinuation_reason": "patient_preference"},
          ("discontinuation_reason", "not_allowed_here")),
    _case("ongoing with a resume day", {**ONGOING, "trastuzumab_resume_day": 1789},
          ("trastuzumab_resume_day", "not_allowed_here"), hidden=(1789,)),
    _case("stop day without reason", {"discontinuation_reason": ABSENT},
          ("discontinuation_reason", "required")),
    _case("interrupted: stop day without reason",
          {**INTERRUPTED, "discontinuation_reason": None}, ("discontinuation_reason", "required")),
    _case("interrupted without resume day", {**INTERRUPTED, "trastuzumab_resume_day": ABSENT},
          ("trastuzumab_resume_day", "required")),
    # record.md asks for a resume day "if interrupted_resumed"; one sent with discontinued would
    # contradict the status, so the schema refuses it rather than store it unexplained.
    _case("discontinued with a resume day", {"trastuzumab_resume_day": 2789},
          ("trastuzumab_resume_day", "not_allowed_here"), hidden=(2789,)),
    _case("resume before stop", {**INTERRUPTED, "trastuzumab_resume_day": 1409},
          ("trastuzumab_resume_day", "day_order"), hidden=(1409,)),
    _case("resume on the stop day", {**INTERRUPTED, "trastuzumab_resume_day": 1517},
          ("trastuzumab_resume_day", "day_order")),
    _case("stop before start", {"trastuzumab_start_day": 23, "trastuzumab_stop_day": 19},
          ("trastuzumab_stop_day", "day_order"), hidden=(19,)),
    _case("stop on the start day", {"trastuzumab_stop_day": 14},
          ("trastuzumab_stop_day", "day_order")),
    _case("LVEF nadir above baseline", {"lvef_baseline_pct": 57, "lvef_nadir_pct": 63},
          ("lvef_nadir_pct", "out_of_range"), hidden=(57, 63)),
    _case("progression before remission", {"progression_day": 187},
          ("progression_day", "day_order"), hidden=(187,)),
    _case("progression on the remission day", {"progression_day": 200},
          ("progression_day", "day_order")),
    _case("progressing without progression day", {"disease_status_last": "progressing"},
          ("progression_day", "required")),
    _case("stop after last follow-up", {"trastuzumab_stop_day": 3387},
          ("last_followup_day", "day_order"), hidden=(3387,)),
    _case("resume after last follow-up", {**INTERRUPTED, "trastuzumab_resume_day": 3419},
          ("last_followup_day", "day_order"), hidden=(3419,)),
    _case("progression after last follow-up", {"progression_day": 3457},
          ("last_followup_day", "day_order"), hidden=(3457,)),
    _case("remission start after last follow-up",
          {"remission_start_day": 3389, "trastuzumab_stop_day": 3000},
          ("last_followup_day", "day_order"), hidden=(3389,)),
    _case("start after last follow-up",
          {**ONGOING, "trastuzumab_start_day": 1411, "remission_start_day": 1411,
           "last_followup_day": 1400},
          ("last_followup_day", "day_order"), hidden=(1411,)),
    _case("dead without a cause", {"vital_status": "dead"}, ("cause_of_death", "required")),
    _case("alive with a cause", {"cause_of_death": "other"},
          ("cause_of_death", "not_allowed_here")),
    _case("remission before trastuzumab",
          {"trastuzumab_start_day": 211, "remission_start_day": 203},
          ("remission_start_day", "day_order"), hidden=(211, 203)),
    _case("ER/PR negative with endocrine therapy",
          {"er_status": "negative", "pr_status": "negative", "endocrine_maintenance": "yes"},
          ("endocrine_maintenance", "not_allowed_here")),
    _case("ER/PR negative without endocrine therapy",
          {"er_status": "negative", "pr_status": "negative", "endocrine_maintenance": "no"},
          ("endocrine_maintenance", "not_allowed_here")),
    _case("HER2 2+ not amplified", {"her2_ihc": "2+", "her2_ish": "not_amplified"},
          ("her2_ihc", "not_her2_positive")),
    _case("HER2 1+ equivocal", {"her2_ihc": "1+", "her2_ish": "equivocal"},
          ("her2_ihc", "not_her2_positive")),
    _case("HER2 not done", {"her2_ihc": "not_done", "her2_ish": "not_done"},
          ("her2_ihc", "not_her2_positive")),
    *[_case(f"best response {response}", {"best_response": response},
            ("best_response", "not_in_remission"))
      for response in v.BEST_RESPONSE if response not in v.REMISSION_RESPONSES],
    _case("remission of 729 days", {"remission_start_day": 3300 - 729},
          ("remission_start_day", "remission_too_short"), hidden=(3300 - 729,)),
    _case("progression after 729 days",
          {"progression_day": 929, "disease_status_last": "progressing"},
          ("remission_start_day", "remission_too_short"), hidden=(929,)),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("changes, expected, hidden", TYPES + RANGES + LISTS + CONDITIONS)
def test_rule_is_enforced(client, site_a, changes, expected, hidden, via):
    record = changed(EXAMPLE_RECORD, changes)
    assert_rejected(submit(client, site_a, record, via), expected, hidden)
    assert client.get(f"/api/v1/records/{record['subject_id']}", headers=site_a).status_code == 404


@pytest.mark.parametrize("field", sorted(RECORD_MD_CODES))
def test_code_outside_the_list_is_refused(client, site_a, field):
    value = ["bone", "zq-not-a-code"] if field in ("metastatic_sites",) else "zq-not-a-code"
    if field in ("later_anti_her2", "local_therapy_metastases"):
        value = ["zq-not-a-code"]
    # Fields allowed only in some records are tried where they are allowed.
    context = {"cause_of_death": DEAD, "primary_tumour_surgery": DE_NOVO}.get(field, {})
    record = changed(EXAMPLE_RECORD, {**context, field: value})
    assert_rejected(submit(client, site_a, record), [(field, "invalid_choice")],
                    hidden=("zq-not-a-code",))


def test_schema_codes_are_those_of_record_md():
    fields = RecordSchema().fields
    coded = {name: field.choices for name, field in fields.items()
             if isinstance(field, (Code, CodeList))}
    assert coded == RECORD_MD_CODES


@pytest.mark.parametrize("missing", [ABSENT, None], ids=["absent", "null"])
@pytest.mark.parametrize("field", RECORD_MD_REQUIRED)
def test_required_field(client, site_a, field, missing):
    record = changed(EXAMPLE_RECORD, {field: missing})
    assert_rejected(submit(client, site_a, record, "post"), [(field, "required")])


def test_schema_requires_exactly_the_fields_of_record_md():
    required = {name for name, field in RecordSchema().fields.items() if field.required}
    assert required == {*RECORD_MD_REQUIRED, "subject_id"}


def test_post_requires_a_subject_id(client, site_a):
    record = changed(EXAMPLE_RECORD, {"subject_id": ABSENT})
    assert_rejected(submit(client, site_a, record, "post"), [("subject_id", "required")])


def test_put_body_subject_id_must_match_the_url(client, site_a):
    body = changed(EXAMPLE_RECORD, {"subject_id": "TOR-zqmismatch"})
    response = client.put("/api/v1/records/TOR-7f3a9c2e", json=body, headers=site_a)
    assert_rejected(response, [("subject_id", "not_allowed_here")], hidden=("TOR-zqmismatch",))


@pytest.mark.parametrize("via", VIAS)
def test_independent_problems_are_reported_each_once(client, site_a, via):
    record = changed(EXAMPLE_RECORD, {"age_at_met_dx": 93, "sex": "zq-sex",
                                      "cause_of_death": "other", "lvef_nadir_pct": 4,
                                      "metastatic_sites": ["lung", "lung"]})
    assert_rejected(submit(client, site_a, record, via), [
        ("age_at_met_dx", "age_not_top_coded"), ("sex", "invalid_choice"),
        ("cause_of_death", "not_allowed_here"), ("lvef_nadir_pct", "out_of_range"),
        ("metastatic_sites", "duplicate_item"),
    ], hidden=(93, "zq-sex"))


def test_body_must_be_an_object(client, site_a):
    response = client.put("/api/v1/records/TOR-7f3a9c2e", json=["zq-item", 4417],
                          headers=site_a)
    assert_rejected(response, [("(body)", "invalid_type")], hidden=("zq-item", 4417))


class TestRemissionThreshold:
    """REGISTRY_MIN_REMISSION_DAYS is a deployment setting (default 730)."""

    def test_default_is_730(self, app):
        assert app.config["REGISTRY_MIN_REMISSION_DAYS"] == 730

    @pytest.mark.parametrize("days, accepted", [(364, False), (365, True), (729, True)])
    def test_a_changed_setting_moves_the_boundary(self, app, client, site_a, monkeypatch,
                                                  days, accepted):
        monkeypatch.setitem(app.config, "REGISTRY_MIN_REMISSION_DAYS", 365)
        record = changed(EXAMPLE_RECORD, {**ONGOING, "last_followup_day": 200 + days})
        response = submit(client, site_a, record)
        if accepted:
            assert response.status_code == 201, response.json
        else:
            assert_rejected(response, [("remission_start_day", "remission_too_short")])
            assert "365" in response.json["errors"][0]["message"]

    def test_a_stricter_setting_refuses_the_example(self, app, client, site_a, monkeypatch):
        monkeypatch.setitem(app.config, "REGISTRY_MIN_REMISSION_DAYS", 3101)
        assert_rejected(submit(client, site_a, dict(EXAMPLE_RECORD)),
                        [("remission_start_day", "remission_too_short")])

    def test_setting_is_read_from_the_environment(self, monkeypatch, database_url):
        from registry import create_app

        monkeypatch.setenv("REGISTRY_MIN_REMISSION_DAYS", "1095")
        other = create_app({"DATABASE_URL": database_url, "TESTING": True})
        assert other.config["REGISTRY_MIN_REMISSION_DAYS"] == 1095

    @pytest.mark.parametrize("threshold", [1, 1000, 3100])
    def test_schema_with_its_own_threshold(self, threshold):
        schema = RecordSchema(min_remission_days=threshold)
        on_the_line = changed(EXAMPLE_RECORD, {**ONGOING,
                                               "last_followup_day": 200 + threshold})
        assert schema.validate(on_the_line) == {}
        one_short = changed(on_the_line, {"last_followup_day": 199 + threshold})
        errors = schema.validate(one_short)
        assert [problem.code for problem in errors["remission_start_day"]] == [
            "remission_too_short"]


def _outcome(load: Any, raw: Any) -> Any:
    """What a load gives: the data, or every problem (field, code, message) in order."""
    try:
        return load(raw)
    except ValidationError as error:
        return problems_to_list(error.messages)


def _mutations(rng: random.Random, record: dict[str, Any]) -> list[Any]:
    """A record broken in one way or another: each must get load()'s own answer."""
    name = rng.choice(sorted(record))
    return [
        {key: value for key, value in record.items() if key != name},
        {**record, name: None},
        {**record, name: "2020-01-01"},
        {**record, name: 10 ** 6},
        {**record, name: [name]},
        {**record, "version": 3},
        {**record, "patient_name": "x"},
        {**record, "remark": 1},
        {**record, "last_followup_day": record["remission_start_day"] + 1},
        {**record, "best_response": "partial_response"},
        [record],
        "record",
    ]


@pytest.mark.parametrize("schema_class", [PutRecordSchema, RecordSchema])
def test_load_record_gives_what_load_gives(schema_class: type[RecordSchema]) -> None:
    """load_record's shortcut for valid records answers as marshmallow's load() does, for valid
    records (the data) and broken ones (every problem, in order)."""
    schema = schema_class()
    assert schema._shortcut is not None  # the shortcut is taken for these schemas
    rng = random.Random(2026)
    for index in range(300):
        record = synthetic_record(rng, "TOR")
        if schema_class is PutRecordSchema and index % 2:
            record.pop("subject_id")
        expected = _outcome(schema.load, record)
        assert isinstance(expected, dict)
        assert _outcome(schema.load_record, record) == expected
        for broken in _mutations(rng, record):
            assert _outcome(schema.load_record, broken) == _outcome(schema.load, broken)


def test_load_record_leaves_a_schema_with_another_hook_to_load() -> None:
    """A hook the shortcut does not know (here a post_load) turns the shortcut off."""

    class Marked(PutRecordSchema):
        @post_load
        def mark(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
            return {**data, "marked": True}

    schema = Marked()
    assert schema._shortcut is None
    record = synthetic_record(random.Random(1), "TOR")
    assert schema.load_record(record)["marked"] is True
