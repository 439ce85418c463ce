"""POST /records/batch: outcomes, changes, dry runs, atomic batches, duplicates, limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from registry.db import unit_of_work
from registry.models import AuditEntry, Record, RecordVersion

ROOT = Path(__file__).resolve().parents[1]

URL = "/api/v1/records/batch"


def subjects(example_record: dict[str, Any], n: int) -> list[dict[str, Any]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [{**example_record, "subject_id": f"TOR-batchsubject{letters[i]}"} for i in range(n)]


def stored_count(model: type = Record) -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_batch_reports_each_outcome(client, site_a, example_record):
    records = subjects(example_record, 3)
    first = client.post(URL, json={"records": records}, headers=site_a)
    assert first.status_code == 200
    assert first.json["summary"] == {"created": 3, "updated": 0, "unchanged": 0, "rejected": 0}
    assert [r["outcome"] for r in first.json["results"]] == ["created"] * 3

    records[1] = {**records[1], "last_followup_day": 3300 + 77}
    records[2] = {**records[2], "age_at_met_dx": 101}
    second = client.post(URL, json={"records": records}, headers=site_a).json
    assert second["summary"] == {"created": 0, "updated": 1, "unchanged": 1, "rejected": 1}
    unchanged, updated, rejected = second["results"]
    assert unchanged == {"index": 0, "subject_id": records[0]["subject_id"],
                         "outcome": "unchanged", "version": 1}
    assert updated["version"] == 2
    assert updated["changes"] == {"last_followup_day": {"old": 3300, "new": 3377}}
    assert rejected["errors"] == [{"field": "age_at_met_dx", "code": "age_not_top_coded",
                                   "message": "ages over 89 are sent as 90"}]
    assert "101" not in str(rejected)
    assert stored_count(RecordVersion) == 4


def test_unchanged_is_recognised_even_when_lists_are_reordered(client, site_a, example_record):
    client.post(URL, json={"records": [example_record]}, headers=site_a)
    reordered = {**example_record, "metastatic_sites": ["bone", "liver"]}
    response = client.post(URL, json={"records": [reordered]}, headers=site_a).json
    assert response["results"][0]["outcome"] == "unchanged"
    assert stored_count(RecordVersion) == 1


def test_dry_run_reports_changes_and_writes_nothing(client, site_a, example_record):
    client.post(URL, json={"records": [example_record]}, headers=site_a)
    changed = {**example_record, "disease_status_last": "stable"}
    new = {**example_record, "subject_id": "TOR-brandnewsubject"}
    response = client.post(f"{URL}?dry_run=true", json={"records": [changed, new]},
                           headers=site_a).json
    assert response["dry_run"] is True
    assert [r["outcome"] for r in response["results"]] == ["updated", "created"]
    assert response["results"][0]["changes"] == {
        "disease_status_last": {"old": "ned", "new": "stable"}}
    assert stored_count() == 1 and stored_count(RecordVersion) == 1
    assert stored_count(AuditEntry) == 1


def test_atomic_batch_writes_nothing_when_one_record_fails(client, site_a, example_record):
    records = subjects(example_record, 3)
    records[1] = {**records[1], "sex": "fenale"}
    response = client.post(f"{URL}?atomic=true", json={"records": records}, headers=site_a)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.json["summary"] == {"created": 0, "updated": 0, "unchanged": 0,
                                        "rejected": 1, "not_written": 2}
    # No record claims a write that did not happen; each says what it would have been.
    assert [(r["outcome"], r.get("would_be")) for r in response.json["results"]] == [
        ("not_written", "created"), ("rejected", None), ("not_written", "created")]
    assert response.json["results"][1]["errors"][0]["code"] == "invalid_choice"
    assert "fenale" not in response.get_data(as_text=True)
    assert stored_count() == 0 and stored_count(AuditEntry) == 0


def test_atomic_batch_writes_everything_when_all_pass(client, site_a, example_record):
    response = client.post(f"{URL}?atomic=true", json={"records": subjects(example_record, 4)},
                           headers=site_a)
    assert response.status_code == 200 and response.json["summary"]["created"] == 4
    assert stored_count() == 4


def test_non_atomic_batch_writes_the_valid_records(client, site_a, example_record):
    records = subjects(example_record, 3)
    records[0] = {**records[0], "best_response": "partial_response"}
    response = client.post(URL, json={"records": records}, headers=site_a).json
    assert response["summary"] == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 1}
    assert response["results"][0]["errors"][0]["code"] == "not_in_remission"
    assert stored_count() == 2


def test_second_occurrence_of_a_subject_is_rejected(client, site_a, example_record):
    twice = [example_record, {**example_record, "last_followup_day": 3500}]
    response = client.post(URL, json={"records": twice}, headers=site_a).json
    assert [r["outcome"] for r in response["results"]] == ["created", "rejected"]
    assert response["results"][1]["errors"][0]["code"] == "duplicate_in_batch"
    assert stored_count() == 1


def test_rejected_records_never_echo_an_identifier_like_subject_id(client, site_a,
                                                                    example_record):
    bad = {**example_record, "subject_id": "416-555-0199"}
    response = client.post(URL, json={"records": [bad]}, headers=site_a)
    result = response.json["results"][0]
    assert result["subject_id"] is None and result["outcome"] == "rejected"
    assert result["errors"][0]["code"] in ("identifier_like", "date_not_allowed")
    assert "0199" not in response.get_data(as_text=True)


def test_withdrawn_subject_in_a_batch_is_rejected(client, site_a, example_record):
    client.post(URL, json={"records": [example_record]}, headers=site_a)
    client.delete("/api/v1/records/TOR-7f3a9c2e", headers=site_a)
    response = client.post(URL, json={"records": [example_record]}, headers=site_a).json
    assert response["results"][0]["errors"][0]["code"] == "subject_withdrawn"
    assert stored_count() == 0


def test_batch_over_the_record_limit_is_413(client, site_a, example_record, app):
    app.config["REGISTRY_MAX_BATCH"] = 2
    try:
        response = client.post(URL, json={"records": subjects(example_record, 3)},
                               headers=site_a)
    finally:
        app.config["REGISTRY_MAX_BATCH"] = 1000
    assert response.status_code == 413 and response.mimetype == "application/problem+json"
    assert stored_count() == 0


def test_body_over_the_size_limit_is_413_before_parsing(client, site_a, app):
    body = b'{"records": [' + b'{"a": 1},' * 600_000 + b'{"a": 1}]}'
    assert len(body) > app.config["MAX_CONTENT_LENGTH"]
    response = client.post(URL, data=body, headers={**site_a,
                                                     "Content-Type": "application/json"})
    assert response.status_code == 413 and response.mimetype == "application/problem+json"


def test_batch_body_must_be_an_object_with_a_list(client, site_a):
    for body in ([], {"records": {}}, {"records": "x"}, {}):
        response = client.post(URL, json=body, headers=site_a)
        assert response.status_code == 422, body
        assert response.json["errors"], body


def test_non_object_records_are_rejected_one_by_one(client, site_a, example_record):
    response = client.post(URL, json={"records": [example_record, 7, None, "x"]},
                           headers=site_a).json
    assert [r["outcome"] for r in response["results"]] == ["created"] + ["rejected"] * 3
    assert all(r["errors"][0]["code"] == "invalid_type" for r in response["results"][1:])


def test_the_readmes_batch_example_file_is_accepted_whole(client, site_a):
    """docs/examples/batch.json is what the README's batch command sends: complete, valid."""
    example = json.loads((ROOT / "docs" / "examples" / "batch.json").read_text())
    assert "docs/examples/batch.json" in (ROOT / "README.md").read_text()
    dry = client.post(f"{URL}?dry_run=true", json=example, headers=site_a).json
    assert dry["summary"] == {"created": len(example["records"]), "updated": 0,
                              "unchanged": 0, "rejected": 0}
    sent = client.post(URL, json=example, headers=site_a).json
    assert sent["summary"]["created"] == len(example["records"]) >= 2
    again = client.post(URL, json=example, headers=site_a).json
    assert again["summary"]["unchanged"] == len(example["records"])


def test_a_resend_is_confirmed_under_the_write_lock(client, site_a, example_record,
                                                    monkeypatch):
    """The first read only hints that a record is resent: one withdrawn, or changed, since that
    read is planned as what it is now, never answered unchanged."""
    from registry.services.intake import batches

    subject_id = example_record["subject_id"]
    first = {"records": [example_record]}
    assert client.post("/api/v1/records/batch", json=first, headers=site_a) \
        .json["results"][0]["outcome"] == "created"
    # As if the first read had found this very submission stored: it finds an older one now.
    monkeypatch.setattr(batches, "_resent_unchanged",
                        lambda session, site_id, digests: {subject_id: 1})
    older = {**example_record, "age_at_met_dx": 61}
    answer = client.post("/api/v1/records/batch", json={"records": [older]}, headers=site_a)
    [result] = answer.json["results"]
    assert result["outcome"] == "updated" and result["version"] == 2
    assert result["changes"] == {"age_at_met_dx": {"old": 52, "new": 61}}
    broken = {**example_record, "age_at_met_dx": 120}
    answer = client.post("/api/v1/records/batch", json={"records": [broken]}, headers=site_a)
    assert answer.json["results"][0]["outcome"] == "rejected"
    assert client.delete(f"/api/v1/records/{subject_id}", headers=site_a).status_code == 204
    answer = client.post("/api/v1/records/batch", json={"records": [older]}, headers=site_a)
    [result] = answer.json["results"]
    assert result["outcome"] == "rejected" and result["errors"][0]["code"] == "subject_withdrawn"
