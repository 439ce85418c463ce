"""The records API of api.md: PUT, POST, GET, list, history, DELETE, ETag and If-Match."""

from __future__ import annotations

import random
from typing import Any

import pytest
from flask import jsonify
from sqlalchemy import func, select

from conftest import without_subject
from registry.api.records import record_answer
from registry.db import unit_of_work
from registry.models import AuditEntry, Record, RecordVersion, Tombstone
from registry.schemas.api import RecordOutSchema
from registry.services.intake import records
from registry.services.intake.synthetic import synthetic_record
from registry.services.access.tokens import resolve_token

URL = "/api/v1/records"


def put(client, headers, record: dict[str, Any], **extra_headers: str):  # noqa: ANN001, ANN201
    subject_id, body = without_subject(record)
    return client.put(f"{URL}/{subject_id}", json=body, headers={**headers, **extra_headers})


def count(model: type, **where: Any) -> int:
    with unit_of_work() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return session.scalar(query)


def test_put_creates_then_replaces_then_reports_unchanged(client, site_a, example_record):
    created = put(client, site_a, example_record)
    assert created.status_code == 201
    assert created.json["version"] == 1 and created.headers["ETag"] == '"1"'

    same = put(client, site_a, example_record)
    assert same.status_code == 200 and same.json["version"] == 1
    assert count(RecordVersion) == 1, "an unchanged PUT must not write a version"

    example_record["last_followup_day"] = 3400
    changed = put(client, site_a, example_record)
    assert changed.status_code == 200
    assert changed.json["version"] == 2 and changed.headers["ETag"] == '"2"'
    assert changed.json["derived"]["remission_days"] == 3200
    assert count(RecordVersion) == 2
    assert count(AuditEntry, action="update") == 1


def test_put_may_repeat_the_subject_id_but_not_contradict_it(client, site_a, example_record):
    subject_id, body = without_subject(example_record)
    same = client.put(f"{URL}/{subject_id}", json={**body, "subject_id": subject_id},
                      headers=site_a)
    assert same.status_code == 201
    other = client.put(f"{URL}/{subject_id}", json={**body, "subject_id": "TOR-otherpseudonym"},
                       headers=site_a)
    assert other.status_code == 422
    assert other.json["errors"][0] == {"field": "subject_id", "code": "not_allowed_here",
                                       "message": other.json["errors"][0]["message"]}


def test_if_match_guards_against_lost_updates(client, site_a, example_record):
    put(client, site_a, example_record)
    example_record["last_followup_day"] = 3400
    assert put(client, site_a, example_record, **{"If-Match": '"1"'}).status_code == 200
    example_record["last_followup_day"] = 3500
    stale = put(client, site_a, example_record, **{"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.mimetype == "application/problem+json"
    assert client.get(f"{URL}/TOR-7f3a9c2e", headers=site_a).json["last_followup_day"] == 3400
    assert put(client, site_a, example_record, **{"If-Match": 'W/"2"'}).status_code == 200


def test_if_match_on_a_missing_record_fails_and_creates_nothing(client, site_a, example_record):
    response = put(client, site_a, example_record, **{"If-Match": '"1"'})
    assert response.status_code == 412
    assert count(Record) == 0


def test_malformed_if_match_is_a_bad_request(client, site_a, example_record):
    response = put(client, site_a, example_record, **{"If-Match": "yesterday"})
    assert response.status_code == 400
    assert response.json["errors"][0]["field"] == "If-Match"


def test_post_creates_only(client, site_a, example_record):
    first = client.post(URL, json=example_record, headers=site_a)
    assert first.status_code == 201 and first.json["subject_id"] == "TOR-7f3a9c2e"
    again = client.post(URL, json=example_record, headers=site_a)
    assert again.status_code == 409 and again.json["code"] == "record_exists"
    assert count(Record) == 1


def test_get_returns_fields_derived_version_and_times(client, site_a, example_record):
    put(client, site_a, example_record)
    record = client.get(f"{URL}/TOR-7f3a9c2e", headers=site_a).json
    submitted = {k: v for k, v in example_record.items() if k != "metastatic_sites"}
    assert {k: record[k] for k in submitted} == submitted
    assert record["metastatic_sites"] == ["bone", "liver"]  # stored in dictionary order
    assert record["primary_tumour_surgery"] is None  # absent optional fields read as null
    assert set(record["derived"]) >= {"hr_status", "remission_band", "off_trastuzumab_band"}
    assert record["created_at"] and record["updated_at"] and record["version"] == 1
    assert "site_id" not in record and "cell_key" not in record and "id" not in record


def test_get_of_a_missing_record_is_404_problem(client, site_a):
    response = client.get(f"{URL}/TOR-doesnotexist", headers=site_a)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 404 and response.json["type"].endswith("/not-found")


def _many(example_record: dict[str, Any], n: int) -> list[dict[str, Any]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [{**example_record, "subject_id": f"TOR-subject{letters[i // 26]}{letters[i % 26]}"}
            for i in range(n)]


def test_list_is_keyset_paginated_and_complete(client, site_a, example_record):
    for record in _many(example_record, 7):
        assert put(client, site_a, record).status_code == 201
    seen, cursor = [], None
    while True:
        query = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get(URL, query_string=query, headers=site_a).json
        seen += [record["subject_id"] for record in page["records"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(r["subject_id"] for r in _many(example_record, 7))
    assert len(seen) == len(set(seen)) == 7


def test_list_filters_by_updated_since(client, site_a, example_record):
    first, second = _many(example_record, 2)
    put(client, site_a, first)
    stamp = client.get(f"{URL}/{first['subject_id']}", headers=site_a).json["updated_at"]
    put(client, site_a, second)
    later = client.get(f"{URL}/{second['subject_id']}", headers=site_a).json["updated_at"]
    listed = client.get(URL, query_string={"updated_since": later}, headers=site_a).json
    assert [r["subject_id"] for r in listed["records"]] == [second["subject_id"]]
    listed = client.get(URL, query_string={"updated_since": stamp}, headers=site_a).json
    assert len(listed["records"]) == 2


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 1001}, {"cursor": "not-a-cursor"},
                                   {"updated_since": "2026-13-45"}])
def test_list_rejects_bad_parameters_with_400_or_422(client, site_a, query):
    response = client.get(URL, query_string=query, headers=site_a)
    assert response.status_code in (400, 422)
    assert response.mimetype == "application/problem+json"
    assert response.json["errors"]


def test_history_lists_versions_with_changed_fields_and_source(client, site_a, example_record):
    put(client, site_a, example_record)
    example_record["vital_status"] = "dead"
    example_record["cause_of_death"] = "other"
    put(client, site_a, example_record, **{"X-Registry-Source": "redcap-sync"})
    history = client.get(f"{URL}/TOR-7f3a9c2e/history", headers=site_a).json
    assert [v["version"] for v in history["versions"]] == [1, 2]
    assert history["versions"][1]["source"] == "redcap-sync"
    assert history["versions"][1]["changed_fields"] == ["vital_status", "cause_of_death"]
    assert history["versions"][0]["source"] == "api"


@pytest.mark.parametrize("claimed", ["console", "fax"])
def test_a_client_names_only_a_source_of_versions(client, site_a, example_record, claimed):
    """'console' is the audit log's word for the console's own withdrawals: no client claims it."""
    body = {key: value for key, value in example_record.items() if key != "subject_id"}
    refused = client.put(f"{URL}/TOR-7f3a9c2e", json=body,
                         headers={**site_a, "X-Registry-Source": claimed})
    assert refused.status_code in (400, 422)
    assert "X-Registry-Source" in str(refused.json) and count(Record) == 0


def test_withdrawal_erases_data_and_versions_keeps_tombstone(client, site_a, example_record):
    put(client, site_a, example_record)
    example_record["last_followup_day"] = 3400
    put(client, site_a, example_record)
    response = client.delete(f"{URL}/TOR-7f3a9c2e", headers=site_a)
    assert response.status_code == 204 and response.data == b""
    assert count(Record) == 0 and count(RecordVersion) == 0
    assert count(Tombstone, subject_id="TOR-7f3a9c2e", reason="consent_withdrawn") == 1
    assert count(AuditEntry, action="withdraw") == 1
    assert client.get(f"{URL}/TOR-7f3a9c2e", headers=site_a).status_code == 404
    again = put(client, site_a, example_record)
    assert again.status_code == 409 and again.json["code"] == "subject_withdrawn"
    posted = client.post(URL, json=example_record, headers=site_a)
    assert posted.status_code == 409 and posted.json["code"] == "subject_withdrawn"
    assert count(Record) == 0
    # Withdrawing again is harmless and writes nothing more.
    assert client.delete(f"{URL}/TOR-7f3a9c2e", headers=site_a).status_code == 204
    assert count(AuditEntry, action="withdraw") == 1


def test_withdrawal_reason_is_recorded_and_checked(client, site_a, example_record):
    put(client, site_a, example_record)
    bad = client.delete(f"{URL}/TOR-7f3a9c2e?reason=bored", headers=site_a)
    assert bad.status_code == 400  # a bad query parameter
    ok = client.delete(f"{URL}/TOR-7f3a9c2e?reason=deleted_at_source", headers=site_a)
    assert ok.status_code == 204
    assert count(Tombstone, reason="deleted_at_source") == 1


def test_withdrawing_a_record_never_submitted_is_404(client, site_a):
    assert client.delete(f"{URL}/TOR-neverseenbefore", headers=site_a).status_code == 404
    assert count(Tombstone) == 0


def test_audit_log_records_who_when_what_but_no_values(client, site_a, example_record):
    put(client, site_a, example_record)
    example_record["last_followup_day"] = 3456
    put(client, site_a, example_record)
    with unit_of_work() as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(e.action, e.version, e.source) for e in entries] == [
            ("create", 1, "api"), ("update", 2, "api")]
        assert entries[1].changed_fields == ["last_followup_day"]
        assert all(e.token_id is not None and e.subject_id == "TOR-7f3a9c2e" for e in entries)
        assert "3456" not in repr([e.changed_fields for e in entries])


def test_audit_log_is_append_only_in_the_database(client, site_a, example_record):
    from sqlalchemy import delete, update
    from sqlalchemy.exc import DatabaseError

    put(client, site_a, example_record)
    for statement in (update(AuditEntry).values(action="update"), delete(AuditEntry)):
        with pytest.raises(DatabaseError):
            with unit_of_work() as session:
                session.execute(statement)
    assert count(AuditEntry) == 1


@pytest.mark.parametrize("subject_id, code", [("4165550199", "identifier_like"),
                                              ("TOR-2012-05-01", "date_not_allowed"),
                                              ("ab", "invalid_format")])
def test_subject_id_in_the_url_obeys_the_identifier_rules(client, site_a, example_record,
                                                           subject_id, code):
    _, body = without_subject(example_record)
    response = client.put(f"{URL}/{subject_id}", json=body, headers=site_a)
    assert response.status_code == 422
    assert response.json["errors"][0]["field"] == "subject_id"
    assert response.json["errors"][0]["code"] == code
    assert subject_id not in response.get_data(as_text=True)
    assert count(Record) == 0


def test_updated_since_honours_the_time_zone_of_the_parameter(client, site_a, example_record):
    put(client, site_a, example_record)
    stamp = client.get(f"{URL}/TOR-7f3a9c2e", headers=site_a).json["updated_at"]
    from datetime import datetime, timedelta, timezone

    moment = datetime.fromisoformat(stamp)
    # The same instant written in UTC-5, a minute earlier and a minute later.
    zone = timezone(timedelta(hours=-5))
    before = (moment - timedelta(minutes=1)).astimezone(zone).isoformat()
    after = (moment + timedelta(minutes=1)).astimezone(zone).isoformat()
    assert len(client.get(URL, query_string={"updated_since": before},
                          headers=site_a).json["records"]) == 1
    assert client.get(URL, query_string={"updated_since": after},
                      headers=site_a).json["records"] == []


def _stored_state(subject_id: str) -> dict[str, Any]:
    """What a write left of one subject: its record's written columns, its versions and its
    audit entries (without ids and times, which differ between two writes)."""
    from registry.services.intake.record_rows import ROW_COLUMNS

    with unit_of_work() as session:
        record = session.scalar(select(Record).where(Record.subject_id == subject_id))
        versions = session.scalars(select(RecordVersion).where(
            RecordVersion.record_id == record.id).order_by(RecordVersion.version))
        entries = session.scalars(select(AuditEntry).where(
            AuditEntry.subject_id == subject_id).order_by(AuditEntry.id))
        return {
            "record": {name: getattr(record, name) for name in (*ROW_COLUMNS, "version",
                                                                "submission_digest")},
            "times": record.created_at <= record.updated_at,
            "versions": [(v.version, v.source, v.token_id, v.changed_fields, v.data)
                         for v in versions],
            "audit": [(e.token_id, e.site_id, e.action, e.source, e.version, e.changed_fields)
                      for e in entries],
        }


def test_a_single_write_stores_what_a_batch_stores(client, site_a, example_record):
    """One record is written in one statement on PostgreSQL, many in bulk: same rows."""
    single, pair = "TOR-singlewrite", ("TOR-batchwriteone", "TOR-batchwritetwo")

    def write_all(record: dict[str, Any]) -> None:
        assert put(client, site_a, {**record, "subject_id": single}).status_code in (200, 201)
        batch = client.post(f"{URL}/batch", headers=site_a, json={"records": [
            {**record, "subject_id": subject} for subject in pair]})
        assert batch.json["summary"]["rejected"] == 0

    write_all(example_record)
    write_all({**example_record, "metastatic_sites": ["bone"], "last_followup_day": 3500})
    alone, batched = _stored_state(single), _stored_state(pair[0])
    batched["record"]["submission_digest"] = None  # a batch remembers what it was sent
    assert alone == batched
    assert [version[0] for version in alone["versions"]] == [1, 2]


def test_single_record_writes_stay_in_psycopgs_statement_cache():
    """psycopg parses the SQL of a statement again on every execution when it is longer than
    4096 characters or has more than 50 parameters (psycopg/_queries.py): the one-statement
    writes of a record must stay under both, columns added to the record included."""
    from sqlalchemy.dialects.postgresql import psycopg

    from registry.services.intake.writes import _CREATE_ONE, _UPDATE_ONE

    for statement in (_CREATE_ONE, _UPDATE_ONE):
        compiled = statement.compile(dialect=psycopg.dialect())
        assert len(str(compiled).encode()) <= 4096 and len(compiled.params) <= 50


def test_row_columns_are_the_columns_a_record_sets(example_record):
    from registry.core.record import canonical
    from registry.services.intake.record_rows import ROW_COLUMNS, row_values

    assert set(row_values(canonical(example_record))) == set(ROW_COLUMNS)
    assert set(ROW_COLUMNS) <= {column.name for column in Record.__table__.columns}


def test_answers_to_writes_carry_the_stored_timestamps(client, site_a, example_record):
    created = put(client, site_a, example_record).json
    stored = client.get(f"{URL}/TOR-7f3a9c2e", headers=site_a).json
    history = client.get(f"{URL}/TOR-7f3a9c2e/history", headers=site_a).json
    assert created["created_at"] == stored["created_at"] == stored["updated_at"]
    assert history["versions"][0]["created_at"] == stored["created_at"]
    example_record["last_followup_day"] = 3400
    updated = put(client, site_a, example_record).json
    stored = client.get(f"{URL}/TOR-7f3a9c2e", headers=site_a).json
    assert (updated["created_at"], updated["updated_at"]) == (stored["created_at"],
                                                              stored["updated_at"])
    unchanged = put(client, site_a, example_record).json
    assert unchanged["updated_at"] == stored["updated_at"]
    posted = client.post(URL, json={**example_record, "subject_id": "TOR-postedrecord"},
                         headers=site_a).json
    assert posted["created_at"] == client.get(f"{URL}/TOR-postedrecord",
                                              headers=site_a).json["created_at"]


def test_one_answer_lists_every_problem_of_the_body_and_the_url(client, site_a):
    """The URL's subject_id breaks the identifier rules and the body lacks most fields: both
    kinds of problem come in the same 422, not in rounds."""
    response = client.put(f"{URL}/TOR-1234567", json={"sex": "female"}, headers=site_a)
    assert response.status_code == 422
    codes = {(error["field"], error["code"]) for error in response.json["errors"]}
    assert ("subject_id", "identifier_like") in codes
    assert ("met_dx_year", "required") in codes and ("vital_status", "required") in codes
    assert "1234567" not in response.get_data(as_text=True)
    assert count(Record) == 0


def test_a_withdrawn_subject_answers_409_whatever_the_body(client, site_a, example_record):
    put(client, site_a, example_record)
    assert client.delete(f"{URL}/TOR-7f3a9c2e", headers=site_a).status_code == 204
    for body in ({"sex": "female"}, without_subject(example_record)[1], [1, 2]):
        response = client.put(f"{URL}/TOR-7f3a9c2e", json=body, headers=site_a)
        assert response.status_code == 409, body
        assert response.json["code"] == "subject_withdrawn"
    response = client.post(URL, json={"subject_id": "TOR-7f3a9c2e", "sex": "female"},
                           headers=site_a)
    assert response.status_code == 409 and response.json["code"] == "subject_withdrawn"


def test_withdrawal_answers_204_without_body_or_content_type(client, site_a, example_record):
    put(client, site_a, example_record)
    response = client.delete(f"{URL}/TOR-7f3a9c2e", headers=site_a)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert "Content-Type" not in response.headers


@pytest.mark.parametrize("since, listed", [("2000-01-01", 1), ("2999-12-31", 0),
                                           ("2000-01-01T00:00:00Z", 1),
                                           ("2999-12-31T23:00:00+05:00", 0)])
def test_updated_since_takes_a_date_or_a_time_with_its_zone(client, site_a, example_record,
                                                            since, listed):
    put(client, site_a, example_record)
    response = client.get(URL, query_string={"updated_since": since}, headers=site_a)
    assert response.status_code == 200
    assert len(response.json["records"]) == listed


@pytest.mark.parametrize("since, code", [("2026-13-45", "invalid_format"),
                                         ("yesterday", "invalid_format"),
                                         ("2026-11-29T08:30:00", "missing_time_zone")])
def test_a_bad_updated_since_is_a_400_in_plain_words(client, site_a, since, code):
    response = client.get(URL, query_string={"updated_since": since}, headers=site_a)
    assert response.status_code == 400
    [error] = response.json["errors"]
    assert error["field"] == "updated_since" and error["code"] == code
    assert "2026-11-29" in error["message"] and "aware" not in error["message"]


def test_a_record_answer_is_the_schemas_dump(app, site_a) -> None:  # noqa: ANN001
    """The record views answer without marshmallow's dump (record_answer): byte for byte what
    RecordOutSchema's dump gives, for records created, updated, unchanged and read back."""
    caller = resolve_token(site_a["Authorization"].removeprefix("Bearer "))
    rng = random.Random(30)
    views = []
    with app.test_request_context():
        for _ in range(40):
            subject_id, first = without_subject(synthetic_record(rng, "TOR"))
            second = without_subject(synthetic_record(rng, "TOR"))[1]
            for body in (first, second, second):
                views.append(records.put_record(caller, subject_id, body)[1])
            views.append(records.get_record(caller, subject_id))
        schema = RecordOutSchema()
        for view in views:
            assert record_answer(view).get_data() == jsonify(schema.dump(view)).get_data()
