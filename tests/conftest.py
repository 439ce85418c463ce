"""Fixtures: one migrated database per test session, one rolled-back transaction per test.

The same suite runs on SQLite (default, a file in a temporary folder) and on PostgreSQL when
REGISTRY_TEST_DATABASE_URL is set, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test.
The PostgreSQL database is emptied (schema public dropped) at the start of the session.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from alembic import command
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import sessionmaker

from registry import create_app
from registry.db import get_database, make_engine
from registry.services.health import alembic_config
from registry.services.access.tokens import add_site, issue_token

TEST_DATABASE_URL = os.environ.get("REGISTRY_TEST_DATABASE_URL", "")

# The example of a valid record in record.md, word for word.
EXAMPLE_RECORD: dict[str, Any] = {
    "subject_id": "TOR-7f3a9c2e",
    "met_dx_year": 2012, "age_at_met_dx": 52, "sex": "female",
    "her2_ihc": "3+", "her2_ish": "not_done", "her2_tested_on": "primary",
    "er_status": "positive", "pr_status": "negative", "histology": "ductal",
    "presentation": "recurrent", "primary_dx_day": -1460, "prior_adjuvant_trastuzumab": "no",
    "metastatic_sites": ["liver", "bone"], "lesion_count": "two_to_five", "ecog_at_met_dx": 1,
    "first_line_anti_her2": "trastuzumab_pertuzumab", "first_line_chemotherapy": "taxane",
    "later_anti_her2": [], "local_therapy_metastases": ["radiotherapy"],
    "endocrine_maintenance": "yes",
    "trastuzumab_start_day": 14, "best_response": "complete_response", "remission_start_day": 200,
    "response_assessment": "pet_ct",
    "maintenance_status": "discontinued", "trastuzumab_stop_day": 2100,
    "discontinuation_reason": "remission_physician_decision",
    "lvef_baseline_pct": 62, "lvef_nadir_pct": 55, "cardiac_event": "none",
    "progression_day": None, "disease_status_last": "ned", "last_followup_day": 3300,
    "vital_status": "alive",
}


def is_postgres(url: str) -> bool:
    """Whether a database URL points at PostgreSQL."""
    return make_url(url).get_backend_name() == "postgresql"


def empty_database(url: str) -> None:
    """Drop everything in a PostgreSQL database (tables, types, functions of earlier runs)."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def migrate(url: str, revision: str = "head") -> None:
    """Run the registry's migrations against `url`."""
    command.upgrade(alembic_config(url), revision)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A freshly migrated database for this test session."""
    if TEST_DATABASE_URL:
        url = TEST_DATABASE_URL
        if is_postgres(url):
            empty_database(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'registry.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="session")
def session_app(database_url: str) -> Iterator[Flask]:
    """The app under test, configured once per session."""
    # The whole session's unauthenticated requests come from one address: the per-address
    # limit is tested on apps of its own (test_operations, test_rate_limits).
    app = create_app({"DATABASE_URL": database_url, "TESTING": True,
                      "REGISTRY_PUBLIC_URL": "https://registry.test",
                      "REGISTRY_ADDRESS_RATE_LIMIT": "off",
                      # Releases may follow each other at once (privacy.md 2.1: tests set 0).
                      "REGISTRY_RELEASE_MIN_DAYS": 0})
    yield app
    get_database_of(app).engine.dispose()


class JoinedTransaction:
    """Stands in for an engine whose begin() would open a transaction of its own: each begin()
    is a savepoint in the test's transaction instead."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A savepoint of the test's connection, released when the block ends."""
        with self.connection.begin_nested():
            yield self.connection


@pytest.fixture()
def app(session_app: Flask) -> Iterator[Flask]:
    """The app, with every database write of the test inside one transaction rolled back at the
    end (SQLAlchemy's "join a session into an external transaction" recipe). Work of one
    statement (autocommit on PostgreSQL) joins the same transaction."""
    database = get_database_of(session_app)
    connection = database.engine.connect()
    outer = connection.begin()
    original = database.session_factory, database.autocommit, database.transactions
    database.session_factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    database.autocommit = database.transactions = JoinedTransaction(connection)
    try:
        with session_app.app_context():
            yield session_app
    finally:
        database.session_factory, database.autocommit, database.transactions = original
        outer.rollback()
        connection.close()


def get_database_of(app: Flask):  # noqa: ANN201
    """The Database of an app, outside a request."""
    with app.app_context():
        return get_database()


@pytest.fixture()
def dialect(app: Flask) -> str:
    """'sqlite' or 'postgresql'."""
    return get_database().dialect


@pytest.fixture()
def example_record() -> dict[str, Any]:
    """A fresh copy of the valid example record of record.md."""
    return copy.deepcopy(EXAMPLE_RECORD)


@pytest.fixture()
def make_site(app: Flask):  # noqa: ANN201
    """Factory: register a site and return its code."""

    def make(code: str = "TOR", name: str | None = None) -> str:
        add_site(code, name or f"{code} centre")
        return code

    return make


@pytest.fixture()
def make_token(app: Flask):  # noqa: ANN201
    """Factory: issue a token and return the Authorization headers that carry it."""

    def make(role: str = "submitter", site: str | None = None) -> dict[str, str]:
        _, secret = issue_token(role, site)
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture()
def site_a(make_site, make_token) -> dict[str, str]:  # noqa: ANN001
    """Headers of a submitter of site TOR."""
    make_site("TOR")
    return make_token("submitter", "TOR")


@pytest.fixture()
def site_b(make_site, make_token) -> dict[str, str]:  # noqa: ANN001
    """Headers of a submitter of site MTL."""
    make_site("MTL")
    return make_token("submitter", "MTL")


@pytest.fixture()
def coordinator(make_token) -> dict[str, str]:  # noqa: ANN001
    """Headers of a coordinator."""
    return make_token("coordinator")


@pytest.fixture()
def steward(make_token) -> dict[str, str]:  # noqa: ANN001
    """Headers of a steward."""
    return make_token("steward")


def without_subject(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a record into its subject_id and the body of a PUT."""
    body = dict(record)
    return body.pop("subject_id"), body
