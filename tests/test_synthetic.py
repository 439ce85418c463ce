"""The demo-data generator: every record it makes is valid, and a field added to the schema
later (required, or required when a rule of the table holds) is filled from its codes or range
without an edit of the generator, as the README's developer section promises."""

from __future__ import annotations

import copy
import random

import pytest

from registry.core import rules
from registry.core.fields import Code, WholeNumber
from registry.core.record import validate_record
from registry.services.intake import synthetic
from registry.services.intake.synthetic import fill_required_fields, synthetic_record


@pytest.mark.parametrize("realistic", [False, True])
def test_every_record_is_valid_and_the_fill_leaves_it_alone(realistic):
    rng = random.Random(11)
    for _ in range(300):
        record = synthetic_record(rng, "TOR", realistic=realistic)
        assert validate_record(record)[1] == []
        before, state = copy.deepcopy(record), rng.getstate()
        fill_required_fields(rng, record)
        assert record == before and rng.getstate() == state  # no draw: same demo data


def test_required_fields_left_out_are_filled_from_their_codes_and_ranges():
    rng = random.Random(5)
    record = next(r for r in (synthetic_record(rng, "TOR") for _ in range(500))
                  if r["vital_status"] == "dead")
    for name in ("her2_ihc", "metastatic_sites", "age_at_met_dx", "cause_of_death"):
        del record[name]
    assert {problem["field"] for problem in validate_record(record)[1]} == {
        "her2_ihc", "metastatic_sites", "age_at_met_dx", "cause_of_death"}
    fill_required_fields(rng, record)
    assert validate_record(record)[1] == []


def test_a_field_added_later_is_carried_by_the_demo_data(monkeypatch):
    """A required coded field and a field required when it holds a code, as a contributor would
    add them to record.py and rules.py: the generator fills both without knowing them."""
    monkeypatch.setattr(synthetic, "_FIELDS", {
        **synthetic._FIELDS,
        "brca_status": Code(("mutated", "not_mutated"), required=True),
        "brca_variant_class": Code(("class_4", "class_5"), required=False, allow_none=True),
        "brca_tested_age": WholeNumber(18, 90, required=False, allow_none=True)})
    monkeypatch.setattr(synthetic, "_REQUIRING_RULES", (
        *synthetic._REQUIRING_RULES,
        rules.RequiredWhen("brca_variant_class", rules.Is("brca_status", ("mutated",)))))
    rng = random.Random(3)
    made = [synthetic_record(rng, "TOR") for _ in range(200)]
    assert {record["brca_status"] for record in made} == {"mutated", "not_mutated"}
    for record in made:
        mutated = record["brca_status"] == "mutated"
        assert (record.get("brca_variant_class") in ("class_4", "class_5")) is mutated
        assert "brca_tested_age" not in record  # optional and unconditioned: left out
