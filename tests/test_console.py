"""The console through Flask's test client (both databases): sessions, CSRF, cookies, roles,
expiry, revocation, the token kept out of pages and logs, and the table's CSV against the API's.
The same behaviour in a real browser: test_console_browser.py."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from conftest import get_database_of
from registry import create_app
from registry.db import transaction, utcnow
from registry.models import ConsoleSession
from registry.services.window.disclosure import Policy
from registry.services.window.releases import cut_release
from registry.services.intake.synthetic import load_demo_data
from registry.services.access.tokens import issue_token, revoke_token
from registry.web import presentation

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/sign-in") -> str:
    """The CSRF token of a form on a console page."""
    page = client.get(path)
    return CSRF.search(page.get_data(as_text=True)).group(1)


def sign_in(client: FlaskClient, token: str, **extra: Any) -> Any:
    """Post the sign-in form with its CSRF token."""
    return client.post("/sign-in", data={"token": token, "csrf_token": csrf_token(client),
                                         **extra})


@pytest.fixture()
def coordinator_token(app) -> str:  # noqa: ANN001
    """A coordinator's token (the secret)."""
    return issue_token("coordinator")[1]


def test_pages_without_a_session_redirect_to_sign_in(client):
    answer = client.get("/tables?rows=age_band")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/sign-in?next=/tables?rows%3Dage_band"
    assert client.get("/").headers["Location"].startswith("/sign-in")


def test_sign_in_sets_a_strict_httponly_cookie_and_returns_to_the_page(client,
                                                                       coordinator_token):
    answer = sign_in(client, coordinator_token, next="/log")
    assert answer.status_code == 302 and answer.headers["Location"] == "/log"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("registry_console=") and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Secure" not in cookie  # plain http on loopback
    assert coordinator_token not in cookie
    home = client.get("/")
    assert home.status_code == 200 and b"Signed in as <strong>coordinator" in home.data
    assert coordinator_token.encode() not in home.data


def test_the_cookie_is_secure_behind_https(client, coordinator_token):
    page = client.get("/sign-in", base_url="https://registry.test")
    assert "Secure" in page.headers["Set-Cookie"]


def test_sign_in_redirects_only_within_the_console(client, coordinator_token):
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        answer = sign_in(client, coordinator_token, next=target)
        assert answer.headers["Location"] == "/"


def test_a_wrong_token_is_refused_and_never_echoed(client, caplog):
    wrong = "reg_abcdefghijkl_" + "Q" * 43
    with caplog.at_level(logging.DEBUG):
        answer = sign_in(client, wrong)
    assert answer.status_code == 401 and b"not valid" in answer.data
    assert wrong.encode() not in answer.data and wrong not in caplog.text
    assert client.get("/").status_code == 302


def test_the_token_is_in_no_log_line(client, coordinator_token, caplog):
    with caplog.at_level(logging.DEBUG):
        sign_in(client, coordinator_token)
        client.get("/")
    assert coordinator_token not in caplog.text
    assert coordinator_token.split("_", 2)[2] not in caplog.text


def test_a_form_without_its_csrf_token_is_refused(client, coordinator_token):
    refused = client.post("/sign-in", data={"token": coordinator_token})
    assert refused.status_code == 400 and b"Form refused" in refused.data
    assert client.get("/").status_code == 302  # not signed in
    sign_in(client, coordinator_token)
    assert client.post("/sign-out").status_code == 400
    assert client.get("/").status_code == 200  # still signed in
    forged = client.post("/sign-out", data={"csrf_token": "forged"})
    assert forged.status_code == 400


def test_sign_out_ends_the_session_on_the_server(client, coordinator_token):
    sign_in(client, coordinator_token)
    cookie = client.get_cookie("registry_console").value
    answer = client.post("/sign-out", data={"csrf_token": csrf_token(client, "/")})
    assert answer.status_code == 302 and answer.headers["Location"] == "/sign-in"
    client.set_cookie("registry_console", cookie)  # the old cookie, replayed
    assert client.get("/").status_code == 302


def _age_sessions(**ages: timedelta) -> None:
    now = utcnow()
    with transaction() as connection:
        connection.execute(update(ConsoleSession.__table__).values(
            **{column: now - age for column, age in ages.items()}))


@pytest.mark.parametrize("ages", [{"last_seen_at": timedelta(minutes=31)},  # idle: 30 min
                                   {"created_at": timedelta(hours=12, minutes=1)}])  # in all: 12 h
def test_idle_and_absolute_expiry(client, coordinator_token, ages):
    sign_in(client, coordinator_token)
    _age_sessions(last_seen_at=timedelta(minutes=29), created_at=timedelta(hours=11))
    assert client.get("/").status_code == 200
    _age_sessions(**ages)
    answer = client.get("/tables")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/sign-in")
    assert b"expired" in client.get("/sign-in").data


def test_a_revoked_token_ends_its_sessions_at_the_next_request(client, app):
    token, secret = issue_token("steward")
    sign_in(client, secret)
    assert client.get("/log").status_code == 200
    revoke_token(token.public_id)
    assert client.get("/log").headers["Location"].startswith("/sign-in")
    assert b"revoked" in client.get("/sign-in").data
    assert sign_in(client, secret).status_code == 401


def test_roles_decide_the_pages(client, make_site, make_token):
    make_site("TOR")
    submitter = issue_token("submitter", "TOR")[1]
    sign_in(client, submitter)
    assert client.get("/").status_code == 200
    assert client.get("/tables").status_code == 403
    assert client.get("/log").status_code == 403
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/")})
    sign_in(client, issue_token("coordinator")[1])
    assert client.get("/tables").status_code == 200
    assert client.get("/log").status_code == 403


def test_the_navigation_shows_each_role_the_pages_it_may_open(app):
    from registry.web import pages_for

    with app.app_context():
        shown = {role: [page.endpoint.removeprefix("console.") for page in pages_for(role)]
                 for role in ("submitter", "coordinator", "steward")}
    assert shown == {"submitter": ["my_site", "site_records", "upload"],
                     "coordinator": ["tables", "survival", "hazard_ratios", "release_list"],
                     "steward": ["tables", "survival", "hazard_ratios", "release_list",
                                 "query_log"]}


def test_every_console_view_declares_its_action(app):
    for endpoint, view in app.view_functions.items():
        if endpoint.startswith("console.") and endpoint != "console.static":
            assert getattr(view, "_registry_action", None) or \
                getattr(view, "_registry_public", False), endpoint


def test_the_api_takes_no_cookie(client, coordinator_token):
    sign_in(client, coordinator_token)
    answer = client.get("/api/v1/aggregates/dimensions")
    assert answer.status_code == 401
    assert "Set-Cookie" not in answer.headers
    assert "Set-Cookie" not in client.get("/healthz").headers


def test_console_pages_carry_security_headers(client):
    page = client.get("/sign-in")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_the_tables_csv_is_the_apis_csv(client, app, coordinator_token):
    load_demo_data(records_per_site=40)
    cut_release(None, "console test", Policy.from_config(app.config))
    sign_in(client, coordinator_token)
    page = client.get("/tables?rows=hr_status&columns=maintenance_status&filter=")
    assert page.status_code == 200
    href = re.search(r'href="data:text/csv;charset=utf-8,([^"]+)"', page.get_data(as_text=True))
    from_page = unquote(href.group(1))
    from_api = client.get("/api/v1/aggregates/counts?rows=hr_status&columns=maintenance_status"
                          "&format=csv", headers={"Authorization": f"Bearer {coordinator_token}"})
    assert from_page == from_api.get_data(as_text=True)
    assert from_page.startswith("hr_status,maintenance_status,count,suppressed,note\n")


def test_the_releases_page_shows_exact_counts_to_a_steward_only(client, app, coordinator_token):
    load_demo_data(records_per_site=20)
    cut_release(None, "console test", Policy.from_config(app.config))
    sign_in(client, coordinator_token)
    page = client.get("/releases").get_data(as_text=True)
    assert "record counts are protected" in page and "Changed since the previous" not in page
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/")})
    sign_in(client, issue_token("steward")[1])
    page = client.get("/releases").get_data(as_text=True)
    assert "record counts are protected" not in page and "Changed since the previous" in page
    assert "Cut a release now" in page


def test_without_a_release_the_page_says_how_to_get_one(client, coordinator_token):
    sign_in(client, coordinator_token)
    page = client.get("/tables?rows=age_band")
    assert page.status_code == 409 and b"Releases</a> page" in page.data


def test_a_bad_question_is_shown_on_the_page(client, app, coordinator_token):
    load_demo_data(records_per_site=20)
    cut_release(None, None, Policy.from_config(app.config))
    sign_in(client, coordinator_token)
    page = client.get("/tables?rows=age_band&columns=age_band")
    assert page.status_code == 400 and b"must differ from rows" in page.data
    page = client.get("/tables?rows=age_band&filter=histology%3Dnot_a_category")
    assert page.status_code == 400 and b"must be one of" in page.data


def test_count_grid_lays_out_margins():
    table = {"rows": "a", "columns": "b", "total": None,
             "cells": [{"a": "x", "b": "1", "count": 12}, {"a": "x", "b": "2", "count": None,
                                                           "suppressed": True},
                       {"a": "y", "b": "1", "count": 0}, {"a": "y", "b": "2", "count": 15}],
             "row_totals": [{"a": "x", "count": 20}, {"a": "y", "count": 15}],
             "column_totals": [{"b": "1", "count": 12}, {"b": "2", "count": 24}]}
    grid = presentation.count_grid(table)
    assert grid.columns == ["1", "2"]
    assert [(name, [c["count"] for c in cells], total["count"])
            for name, cells, total in grid.rows] == [("x", [12, None], 20), ("y", [0, 15], 15)]
    assert grid.total == {"count": None, "suppressed": True}


@pytest.mark.parametrize(("code", "label"), [
    ("2_to_5y", "2 to 5 years"), ("10y_plus", "10 years or more"), ("18_39", "18\u201339"),
    ("2003_2007", "2003\u20132007"), ("true", "yes"), ("asymptomatic_lvef_decline",
                                                          "asymptomatic LVEF decline"),
])
def test_category_labels(code, label):
    assert presentation.category_label(code) == label


def test_sign_in_paces_token_guessing_by_address(database_url):
    paced = create_app({"DATABASE_URL": database_url, "TESTING": True,
                        "REGISTRY_ADDRESS_RATE_LIMIT": "3 per minute",
                        "REGISTRY_RATE_LIMIT_STORAGE": "memory://"})
    client = paced.test_client()
    wrong = "reg_abcdefghijkl_" + "Z" * 43
    answers = [sign_in(client, wrong).status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]
    refused = sign_in(client, wrong)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert b"Too many sign-ins" in refused.data
    get_database_of(paced).engine.dispose()
