"""The derived fields of record.md, computed from valid records; returned read-only by the API."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import yaml

from conftest import EXAMPLE_RECORD
from registry.core import vocabulary as v
from registry.core.derived import DERIVED_FIELDS, derive
from registry.core.record import RecordSchema
from registry.core.record import canonical
from rejections import INTERRUPTED, ONGOING, changed, submit


def derived(changes: dict[str, Any], min_remission_days: int = 730) -> dict[str, Any]:
    """The derived fields of the example record with `changes`, validated first."""
    schema = RecordSchema(min_remission_days=min_remission_days)
    return derive(canonical(schema.load(changed(EXAMPLE_RECORD, changes))))


def test_the_example_record():
    assert derived({}) == {
        "hr_status": "positive", "visceral_disease": True, "bone_only": False,
        "organ_count_band": "2", "cns_metastases": False, "remission_days": 3100,
        "remission_band": "5_to_10y", "trastuzumab_days": 2086, "off_trastuzumab_days": 1200,
        "off_trastuzumab_band": "3y_plus", "remission_before_stop_band": "5y_plus",
        "progressed_after_stop": False, "age_band": "50_59",
        "met_dx_period": "2008_2012", "ecog_band": "1",
    }


def test_every_derived_field_is_published_and_computed():
    assert set(derived({})) == set(DERIVED_FIELDS)


@pytest.mark.parametrize("er, pr, expected", [
    ("positive", "negative", "positive"), ("negative", "positive", "positive"),
    ("positive", "positive", "positive"), ("positive", "unknown", "positive"),
    ("negative", "negative", "negative"), ("negative", "unknown", "unknown"),
    ("unknown", "unknown", "unknown"),
])
def test_hr_status(er, pr, expected):
    endocrine = "not_applicable" if er == pr == "negative" else "yes"
    assert derived({"er_status": er, "pr_status": pr,
                    "endocrine_maintenance": endocrine})["hr_status"] == expected


@pytest.mark.parametrize("sites, visceral, bone_only, organs, cns", [
    (["bone"], False, True, "1", False),
    (["liver"], True, False, "1", False),
    (["lung"], True, False, "1", False),
    (["pleura"], True, False, "1", False),
    (["cns"], True, False, "1", True),
    (["distant_lymph_nodes"], False, False, "1", False),
    (["skin_soft_tissue", "other"], False, False, "2", False),
    (["bone", "distant_lymph_nodes"], False, False, "2", False),
    (["bone", "lung", "cns"], True, False, "3+", True),
    (list(v.METASTATIC_SITES), True, False, "3+", True),
])
def test_metastatic_site_fields(sites, visceral, bone_only, organs, cns):
    fields = derived({"metastatic_sites": sites})
    assert (fields["visceral_disease"], fields["bone_only"], fields["organ_count_band"],
            fields["cns_metastases"]) == (visceral, bone_only, organs, cns)


@pytest.mark.parametrize("days, band", [
    (1, "under_2y"), (729, "under_2y"), (730, "2_to_5y"), (1825, "2_to_5y"), (1826, "5_to_10y"),
    (3651, "5_to_10y"), (3652, "10y_plus"), (9000, "10y_plus"),
])
def test_remission_band_boundaries(days, band):
    # A low threshold lets a short remission through, to reach the first band.
    fields = derived({**ONGOING, "last_followup_day": 200 + days}, min_remission_days=1)
    assert (fields["remission_days"], fields["remission_band"]) == (days, band)


def test_remission_days_end_at_progression():
    fields = derived({"progression_day": 1500, "disease_status_last": "progressing"})
    assert fields["remission_days"] == 1300


@pytest.mark.parametrize("changes, days", [
    ({}, 2100 - 14),  # discontinued: stop - start
    (ONGOING, 3300 - 14),  # ongoing: last follow-up - start
    (INTERRUPTED, (3300 - 14) - (1789 - 1517)),  # resumed: without the interruption
    ({**ONGOING, "trastuzumab_start_day": -30}, 3330),
])
def test_trastuzumab_days(changes, days):
    assert derived(changes)["trastuzumab_days"] == days


@pytest.mark.parametrize("changes, days, band, progressed", [
    ({"trastuzumab_stop_day": 3300}, 0, "under_1y", False),
    ({"trastuzumab_stop_day": 3300 - 364}, 364, "under_1y", False),
    ({"trastuzumab_stop_day": 3300 - 365}, 365, "1_to_3y", False),
    ({"trastuzumab_stop_day": 3300 - 1095}, 1095, "1_to_3y", False),
    ({"trastuzumab_stop_day": 3300 - 1096}, 1096, "3y_plus", False),
    ({"progression_day": 2400, "disease_status_last": "progressing"}, 300, "under_1y", True),
    # Progression on or before the stop: not a discontinuation in remission (clinical ruling).
    ({"progression_day": 2100, "disease_status_last": "progressing"}, None, "none", False),
    ({"progression_day": 1500, "disease_status_last": "progressing"}, None, "none", False),
    ({"progression_day": 2101, "disease_status_last": "progressing"}, 1, "under_1y", True),
])
def test_after_discontinuation(changes, days, band, progressed):
    fields = derived(changes)
    assert (fields["off_trastuzumab_days"], fields["off_trastuzumab_band"],
            fields["progressed_after_stop"]) == (days, band, progressed)


@pytest.mark.parametrize("changes", [
    ONGOING, INTERRUPTED,
    {**INTERRUPTED, "progression_day": 3000, "disease_status_last": "progressing"},
])
def test_off_trastuzumab_only_when_discontinued(changes):
    fields = derived(changes)
    assert (fields["off_trastuzumab_days"], fields["off_trastuzumab_band"],
            fields["progressed_after_stop"]) == (None, "none", None)


@pytest.mark.parametrize("age, band", [
    (18, "18_39"), (39, "18_39"), (40, "40_49"), (49, "40_49"), (50, "50_59"), (59, "50_59"),
    (60, "60_69"), (69, "60_69"), (70, "70_plus"), (90, "70_plus"),
])
def test_age_band_boundaries(age, band):
    assert derived({"age_at_met_dx": age})["age_band"] == band


@pytest.mark.parametrize("year, period", [
    (1998, "1998_2002"), (2002, "1998_2002"), (2003, "2003_2007"), (2007, "2003_2007"),
    (2008, "2008_2012"), (2013, "2013_2017"), (2018, "2018_2022"), (2023, "2023_2027"),
])
def test_met_dx_period_bands(year, period):
    assert derived({"met_dx_year": year})["met_dx_period"] == period


def test_met_dx_period_of_this_year_is_a_published_category():
    from registry.core.vocabulary import met_dx_periods

    this_year = date.today().year
    assert derived({"met_dx_year": this_year})["met_dx_period"] == met_dx_periods(this_year)[-1]


@pytest.mark.parametrize("ecog, band", [(None, "unknown"), (0, "0"), (1, "1"), (2, "2+"),
                                        (3, "2+"), (4, "2+")])
def test_ecog_band(ecog, band):
    assert derived({"ecog_at_met_dx": ecog})["ecog_band"] == band


def test_code_fields_stay_in_their_categories():
    for changes in ({}, ONGOING, INTERRUPTED, {"metastatic_sites": ["bone"]}):
        fields = derived(changes)
        for name, spec in DERIVED_FIELDS.items():
            if spec.kind == "code" and spec.categories:
                # A nullable code (remission_before_stop_band) is empty when it does not apply.
                assert fields[name] in spec.categories or (
                    fields[name] is None and name == "remission_before_stop_band"), name


@pytest.mark.parametrize("stop, band", [
    (200 + 729, "under_2y"), (200 + 730, "2_to_5y"), (200 + 1825, "2_to_5y"),
    (200 + 1826, "5y_plus"),
])
def test_remission_before_stop_band(stop, band):
    assert derived({"trastuzumab_stop_day": stop})["remission_before_stop_band"] == band
    assert derived(ONGOING)["remission_before_stop_band"] is None
    stopped_at_progression = {"progression_day": 2100, "disease_status_last": "progressing"}
    assert derived(stopped_at_progression)["remission_before_stop_band"] is None


def test_api_returns_derived_fields_read_only(client, site_a):
    response = submit(client, site_a, dict(EXAMPLE_RECORD))
    assert response.status_code == 201
    assert response.json["derived"] == derived({})
    subject_id = EXAMPLE_RECORD["subject_id"]
    # A change to a source field is reflected in the derived fields of the new version.
    update = changed(EXAMPLE_RECORD, {"metastatic_sites": ["bone"], "age_at_met_dx": 71})
    response = submit(client, site_a, update)
    assert response.status_code == 200
    read = client.get(f"/api/v1/records/{subject_id}", headers=site_a).json
    assert read["derived"]["bone_only"] is True and read["derived"]["age_band"] == "70_plus"
    assert read["derived"] == derived({"metastatic_sites": ["bone"], "age_at_met_dx": 71})
    # Sending the derived block back is refused, and the OpenAPI contract marks it read-only.
    refused = submit(client, site_a, {**update, "derived": read["derived"]})
    assert refused.status_code == 422
    assert refused.json["errors"][0]["code"] == "read_only_field"
    spec = yaml.safe_load(client.get("/api/v1/openapi.json").get_data(as_text=True))
    assert spec["components"]["schemas"]["RecordOut"]["properties"]["derived"]["readOnly"] is True
