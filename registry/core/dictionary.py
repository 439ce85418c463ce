"""The published data dictionary, generated from the record schema (one source of truth)."""

from __future__ import annotations

from datetime import date
from typing import Any

from marshmallow import fields as ma_fields

from registry.core.derived import DERIVED_FIELDS
from registry.core.fields import Code, CodeList, SubjectId, WholeNumber
from registry.core.record import DICTIONARY_VERSION, RecordSchema
from registry.core.rules import required_when, rule_texts
from registry.core.vocabulary import met_dx_periods

# Every error code a submission can meet, and what it means. Published with the dictionary.
ERROR_CODES: dict[str, str] = {
    "required": "a required field (or one required by another field's value) is missing",
    "unknown_field": "the record has a field the dictionary does not define",
    "prohibited_field": "a field whose name suggests an identifier (name, MRN, date of birth, ...)",
    "read_only_field": "a field the registry sets itself (version, derived, created_at, ...)",
    "invalid_type": "the value has the wrong JSON type",
    "invalid_choice": "the value is not one of the field's codes",
    "invalid_format": "subject_id does not have the allowed form",
    "out_of_range": "the number is outside the field's range",
    "duplicate_item": "a list names the same code twice",
    "day_order": "days are in an impossible order (e.g. a stop before a start)",
    "not_allowed_here": "the field must be absent, or have another value, given other fields",
    "date_not_allowed": "a calendar date was sent; send days from the metastatic diagnosis",
    "identifier_like": "subject_id looks like an identifier (6+ digits with or without "
                       "separators, phone, e-mail, postal code, ...)",
    "age_not_top_coded": "an age over 89; send 90 for 90 or older",
    "not_her2_positive": "neither IHC 3+ nor ISH amplified",
    "not_in_remission": "best response is not a complete response or NED",
    "remission_too_short": "the remission is shorter than the registry's inclusion threshold",
    "subject_withdrawn": "the subject was withdrawn and may not be submitted again",
    "duplicate_in_batch": "the same subject_id appears earlier in the batch",
    "duplicate_key": "the JSON body names the same key twice in one object (400; ambiguous)",
}


def field_type(field: ma_fields.Field) -> str:
    """The dictionary's name for a field's type."""
    if isinstance(field, CodeList):
        return "list of codes"
    if isinstance(field, Code):
        return "code"
    if isinstance(field, WholeNumber):
        return "integer"
    if isinstance(field, SubjectId):
        return "string"
    raise TypeError(f"no dictionary type for {type(field).__name__}")


def describe_field(name: str, field: ma_fields.Field) -> dict[str, Any]:
    """One field of the dictionary."""
    meta = field.metadata
    entry: dict[str, Any] = {
        "name": name,
        "type": field_type(field),
        "required": bool(field.required),
        "nullable": bool(field.allow_none),
        "description": meta.get("description", ""),
    }
    if required_when(name):
        entry["required_when"] = required_when(name)
    if rule_texts(name):
        entry["rules"] = rule_texts(name)
    if isinstance(field, (Code, CodeList)):
        entry["choices"] = list(field.choices)
    if isinstance(field, WholeNumber):
        entry["minimum"], entry["maximum"] = field.minimum, field.upper_bound()
    if isinstance(field, SubjectId):
        entry["pattern"] = meta["pattern"]
    for key in ("unit", "coding"):
        if key in meta:
            entry[key] = meta[key]
    entry["aggregate_dimension"] = bool(meta.get("dimension", False))
    return entry


def record_dictionary(min_remission_days: int) -> dict[str, Any]:
    """The whole dictionary: fields, derived fields, the inclusion rule and the error codes."""
    schema = RecordSchema()
    names = ["subject_id"] + [name for name in schema.fields if name != "subject_id"]
    derived = []
    for name, spec in DERIVED_FIELDS.items():
        entry: dict[str, Any] = {"name": name, "type": spec.kind, "description": spec.meaning}
        categories = met_dx_periods(date.today().year) if name == "met_dx_period" \
            else spec.categories
        if spec.kind == "code":
            entry["categories"] = list(categories)
        derived.append(entry)
    return {
        "version": DICTIONARY_VERSION,
        "time_origin": "day 0 is the date of diagnosis of metastatic disease; every *_day field "
                       "is days from day 0 (negative = before); met_dx_year is the only "
                       "calendar value",
        "inclusion": {
            "her2_positive": "her2_ihc 3+ or her2_ish amplified",
            "remission": "best_response complete_response or ned_after_local_therapy",
            "min_remission_days": min_remission_days,
            "rule": "(progression_day or last_followup_day) - remission_start_day >= "
                    "min_remission_days",
        },
        "fields": [describe_field(name, schema.fields[name]) for name in names],
        "derived_fields": derived,
        "error_codes": ERROR_CODES,
    }
