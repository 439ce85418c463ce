"""Every error is RFC 9457 problem+json from one place; an unreachable database is 503."""

from __future__ import annotations

import logging

import pytest

from registry import create_app
from registry.db import get_database

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def assert_problem(response, status: int) -> dict:  # noqa: ANN001
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    return body


def test_unknown_route_and_wrong_method(client, site_a):
    assert_problem(client.get("/api/v1/nothing-here", headers=site_a), 404)
    response = client.patch("/api/v1/records/TOR-7f3a9c2e", json={}, headers=site_a)
    assert_problem(response, 405)
    assert "PUT" in response.headers["Allow"]


def test_wrong_content_type_is_415(client, site_a):
    response = client.put("/api/v1/records/TOR-7f3a9c2e", data="met_dx_year=2012",
                          headers={**site_a, "Content-Type": "application/x-www-form-urlencoded"})
    assert_problem(response, 415)


@pytest.mark.parametrize("body", [b"{", b"[1,", b'{"a": tru}', b"\xff\xfe", b"[" * 100_000])
def test_malformed_or_over_deep_json_is_400(client, site_a, body):
    response = client.put("/api/v1/records/TOR-7f3a9c2e", data=body,
                          headers={**site_a, "Content-Type": "application/json"})
    assert_problem(response, 400)


def test_validation_problem_lists_field_code_message(client, site_a):
    body = assert_problem(client.put("/api/v1/records/TOR-7f3a9c2e", json={"sex": "robot"},
                                     headers=site_a), 422)
    assert body["title"] == "Record failed validation"
    assert body["detail"].endswith("problems")
    assert all(set(error) == {"field", "code", "message"} for error in body["errors"])
    assert {"field": "sex", "code": "invalid_choice",
            "message": "must be one of: female, male, unknown"} in body["errors"]
    assert "robot" not in str(body)


def test_unreachable_database_is_503_with_retry_after(site_a, caplog):
    app = create_app({"DATABASE_URL": UNREACHABLE, "TESTING": True})
    try:
        with caplog.at_level(logging.DEBUG):
            response = app.test_client().get("/api/v1/records", headers=site_a)
        body = assert_problem(response, 503)
        assert int(response.headers["Retry-After"]) > 0
        assert "SELECT" not in str(body) and "Bearer" not in caplog.text
        assert site_a["Authorization"].split()[1] not in caplog.text
        ready = app.test_client().get("/readyz")
        assert_problem(ready, 503)
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        with app.app_context():
            get_database().engine.dispose()


def test_readyz_answers_when_migrated(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ready" and response.json["schema_revision"]


def test_readyz_is_503_when_the_schema_is_behind(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "TESTING": True})
    try:
        assert_problem(app.test_client().get("/readyz"), 503)
    finally:
        with app.app_context():
            get_database().engine.dispose()


def test_unexpected_errors_are_500_problems_without_details(app, client, site_a, monkeypatch,
                                                            caplog):
    from registry.services.intake import records

    def explode(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("secret-value-4242 leaked into an exception")

    monkeypatch.setattr(records, "list_records", explode)
    with caplog.at_level(logging.ERROR):
        response = client.get("/api/v1/records", headers=site_a)
    body = assert_problem(response, 500)
    assert "4242" not in str(body)
    assert "4242" not in caplog.text
    assert "RuntimeError" in caplog.text or any(
        getattr(r, "error_class", "") == "RuntimeError" for r in caplog.records)


def test_request_bodies_are_not_logged(client, site_a, caplog):
    with caplog.at_level(logging.DEBUG):
        client.put("/api/v1/records/TOR-7f3a9c2e", json={"age_at_met_dx": 7777,
                                                         "sex": "distinctive-9931"},
                   headers=site_a)
    assert "7777" not in caplog.text and "9931" not in caplog.text


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/records/TOR-abc%00def"), ("GET", "/api/v1/records/TOR-abc%00def/history"),
    ("DELETE", "/api/v1/records/TOR-abc%00def")])
def test_nul_characters_in_a_subject_id_are_not_found_not_a_crash(client, site_a, method, path):
    assert_problem(client.open(path, method=method, headers=site_a), 404)


@pytest.mark.parametrize("query", ["rows=hr_status&vital_status=%00",
                                   "rows=hr_status&%00=x", "rows=%00"])
def test_nul_characters_in_aggregate_queries_are_a_400(client, coordinator, query):
    body = assert_problem(client.get(f"/api/v1/aggregates/counts?{query}",
                                     headers=coordinator), 400)
    assert "\x00" not in str(body)
