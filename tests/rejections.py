"""Helpers of the validation tests: submit a record through the API, check how it was refused."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from conftest import without_subject

ABSENT = object()  # in a change set: remove the field from the record
VIAS = ("put", "post")

# Variants of record.md's example (recurrent, discontinued, alive), as change sets.
DE_NOVO = {"presentation": "de_novo", "primary_dx_day": ABSENT, "prior_adjuvant_trastuzumab": "no"}
ONGOING = {"maintenance_status": "ongoing", "trastuzumab_stop_day": ABSENT,
           "discontinuation_reason": ABSENT}
INTERRUPTED = {"maintenance_status": "interrupted_resumed", "trastuzumab_stop_day": 1517,
               "discontinuation_reason": "cardiac_toxicity", "trastuzumab_resume_day": 1789}
DEAD = {"vital_status": "dead", "cause_of_death": "breast_cancer"}


def changed(record: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` with `changes` applied (ABSENT removes a field)."""
    result = dict(record)
    for name, value in changes.items():
        if value is ABSENT:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def submit(client: Any, headers: dict[str, str], record: dict[str, Any], via: str = "put") -> Any:
    """Send a record with its subject_id by PUT /records/{subject_id} or POST /records."""
    if via == "put":
        subject_id, body = without_subject(record)
        return client.put(f"/api/v1/records/{quote(subject_id, safe='')}", json=body,
                          headers=headers)
    return client.post("/api/v1/records", json=record, headers=headers)


def renderings(value: Any) -> list[str]:
    """The ways a submitted value could show up in a JSON response body."""
    if isinstance(value, str):
        return [value, json.dumps(value)[1:-1]]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in renderings(item)]
    return [json.dumps(value)]


def assert_rejected(response: Any, expected: Iterable[tuple[str, str]],
                    hidden: Iterable[Any] = ()) -> list[dict[str, str]]:
    """422 problem+json with exactly the expected (field, code) pairs, echoing no hidden value."""
    text = response.get_data(as_text=True)
    assert response.status_code == 422, text
    assert response.mimetype == "application/problem+json"
    errors = response.json["errors"]
    found = sorted((error["field"], error["code"]) for error in errors)
    assert found == sorted(expected), found
    assert all(error["message"] for error in errors)
    for value in hidden:
        for rendering in renderings(value):
            assert rendering not in text, "the response repeats a submitted value"
    return errors
