"""Security of records (quality.md): object- and function-level authorisation, tokens, mass
assignment."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from sqlalchemy import func, select

from conftest import without_subject
from registry.db import unit_of_work
from registry.models import ApiToken, AuditEntry, Record, Tombstone
from registry.services.access import tokens as token_service
from registry.services.access.tokens import revoke_token

SUBJECT = "TOR-7f3a9c2e"


def snapshot() -> tuple:
    """Everything a request could have changed."""
    with unit_of_work() as session:
        records = session.execute(select(Record.subject_id, Record.version, Record.site_id)
                                  .order_by(Record.id)).all()
        return (records, session.scalar(select(func.count()).select_from(AuditEntry)),
                session.scalar(select(func.count()).select_from(Tombstone)))


def record_requests(record: dict, subject: str) -> list[tuple[str, str, dict | None]]:
    _, body = without_subject(record)
    return [
        ("GET", f"/api/v1/records/{subject}", None),
        ("GET", f"/api/v1/records/{subject}/history", None),
        ("PUT", f"/api/v1/records/{subject}", body),
        ("DELETE", f"/api/v1/records/{subject}", None),
    ]


def test_another_sites_record_answers_exactly_as_a_missing_one(client, site_a, site_b,
                                                                example_record):
    _, body = without_subject(example_record)
    assert client.put(f"/api/v1/records/{SUBJECT}", json=body, headers=site_a).status_code == 201
    before = snapshot()
    for method, url, _ in record_requests(example_record, SUBJECT):
        if method == "PUT":
            continue  # a PUT from site B creates B's own record of that name: tested below
        theirs = client.open(url, method=method, headers=site_b)
        missing = client.open(url.replace(SUBJECT, "TOR-nosuchsubject"), method=method,
                              headers=site_b)
        assert theirs.status_code == missing.status_code == 404, (method, url)
        assert {k: v for k, v in theirs.json.items()} == missing.json
        assert snapshot() == before
    listing = client.get("/api/v1/records", headers=site_b).json
    assert listing["records"] == []


def test_same_subject_id_at_two_sites_are_two_records(client, site_a, site_b, example_record):
    _, body = without_subject(example_record)
    assert client.put(f"/api/v1/records/{SUBJECT}", json=body, headers=site_a).status_code == 201
    changed = {**body, "last_followup_day": 3400}
    assert client.put(f"/api/v1/records/{SUBJECT}", json=changed,
                      headers=site_b).status_code == 201
    a = client.get(f"/api/v1/records/{SUBJECT}", headers=site_a).json
    b = client.get(f"/api/v1/records/{SUBJECT}", headers=site_b).json
    assert (a["last_followup_day"], b["last_followup_day"]) == (3300, 3400)
    assert a["version"] == b["version"] == 1
    assert client.delete(f"/api/v1/records/{SUBJECT}", headers=site_b).status_code == 204
    assert client.get(f"/api/v1/records/{SUBJECT}", headers=site_a).status_code == 200


def test_batch_of_site_b_cannot_touch_site_a(client, site_a, site_b, example_record):
    client.post("/api/v1/records/batch", json={"records": [example_record]}, headers=site_a)
    changed = {**example_record, "vital_status": "dead", "cause_of_death": "other"}
    result = client.post("/api/v1/records/batch", json={"records": [changed]},
                         headers=site_b).json
    assert result["results"][0]["outcome"] == "created"  # B's own record, not A's
    assert client.get(f"/api/v1/records/{SUBJECT}", headers=site_a).json["vital_status"] == \
        "alive"


ROLE_DENIED = ["coordinator", "steward"]


@pytest.mark.parametrize("role", ROLE_DENIED)
def test_non_submitters_may_not_use_record_endpoints(client, make_token, site_a, role,
                                                     example_record):
    _, body = without_subject(example_record)
    client.put(f"/api/v1/records/{SUBJECT}", json=body, headers=site_a)
    before = snapshot()
    headers = make_token(role)
    calls = record_requests(example_record, SUBJECT) + [
        ("GET", "/api/v1/records", None),
        ("POST", "/api/v1/records", example_record),
        ("POST", "/api/v1/records/batch", {"records": [example_record]}),
    ]
    for method, url, json in calls:
        response = client.open(url, method=method, json=json, headers=headers)
        assert response.status_code == 403, (role, method, url)
        assert response.mimetype == "application/problem+json"
    assert snapshot() == before


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer reg_nope",
    "Bearer reg_aaaaaaaaaaaa_" + "x" * 43,
])
def test_missing_or_bad_tokens_are_401_and_change_nothing(client, site_a, example_record,
                                                          authorization):
    before = snapshot()
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, url, json in record_requests(example_record, SUBJECT) + [
            ("GET", "/api/v1/dictionary", None)]:
        response = client.open(url, method=method, json=json, headers=headers)
        assert response.status_code == 401, (method, url)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot() == before


def test_authentication_comes_before_body_validation(client):
    response = client.put(f"/api/v1/records/{SUBJECT}", json={"age_at_met_dx": 200})
    assert response.status_code == 401


def test_tokens_are_stored_only_as_sha256_hashes(app, make_site):
    make_site("TOR")
    row, secret = token_service.issue_token("submitter", "TOR")
    with unit_of_work() as session:
        stored = session.get(ApiToken, row.id)
        columns = {c.name: getattr(stored, c.name) for c in ApiToken.__table__.columns}
    assert secret not in repr(columns)
    assert stored.secret_sha256 == hashlib.sha256(secret.split("_", 2)[2].encode()).hexdigest()


def test_revocation_takes_effect_on_the_next_request(client, make_site, example_record):
    make_site("TOR")
    row, secret = token_service.issue_token("submitter", "TOR")
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/records", headers=headers).status_code == 200
    revoke_token(row.public_id)
    response = client.get("/api/v1/records", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json["detail"]


def test_tokens_are_compared_in_constant_time(client, site_a, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):  # noqa: ANN001, ANN202
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(token_service.hmac, "compare_digest", spy)
    assert client.get("/api/v1/records", headers=site_a).status_code == 200
    unknown = "Bearer reg_zzzzzzzzzzzz_" + "y" * 43
    assert client.get("/api/v1/records", headers={"Authorization": unknown}).status_code == 401
    assert calls == [(64, 64), (64, 64)], "every token check is one constant-time comparison"


def test_a_wrong_secret_with_a_real_token_id_is_refused(client, make_site):
    make_site("TOR")
    row, secret = token_service.issue_token("submitter", "TOR")
    forged = f"reg_{row.public_id}_" + "A" * 43
    assert client.get("/api/v1/records",
                      headers={"Authorization": f"Bearer {forged}"}).status_code == 401


@pytest.mark.parametrize("field", ["version", "site", "site_id", "derived", "created_at",
                                   "updated_at", "id", "cell_key"])
def test_mass_assignment_is_refused(client, site_a, example_record, field):
    subject_id, body = without_subject(example_record)
    response = client.put(f"/api/v1/records/{subject_id}", json={**body, field: 99},
                          headers=site_a)
    assert response.status_code == 422
    assert {"field": field, "code": "read_only_field"} in [
        {k: e[k] for k in ("field", "code")} for e in response.json["errors"]]
    assert snapshot()[0] == []
    batch = client.post("/api/v1/records/batch",
                        json={"records": [{**example_record, field: 99}]}, headers=site_a)
    assert batch.json["results"][0]["outcome"] == "rejected"
    assert snapshot()[0] == []
