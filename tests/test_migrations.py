"""Migrations: empty -> head -> base -> head on this session's kind of database, and the
models agree with what the migrations build."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from live import own_database
from registry.db import Base, make_engine
from registry.services.health import alembic_config, newest_revision


@pytest.fixture()
def scratch_database_url(tmp_path) -> Iterator[str]:  # noqa: ANN001
    """An empty database of the same kind as the suite's, dropped afterwards."""
    with own_database("migrations", tmp_path) as url:
        yield url


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(scratch_database_url: str) -> None:
    config = alembic_config(scratch_database_url)
    command.upgrade(config, "head")
    expected = set(Base.metadata.tables) | {"alembic_version"}
    assert table_names(scratch_database_url) == expected
    command.downgrade(config, "base")
    assert table_names(scratch_database_url) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert table_names(scratch_database_url) == expected
    engine = make_engine(scratch_database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == \
            newest_revision()
    engine.dispose()


def _secrets(url: str) -> list[tuple[str, str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(
                text("SELECT name, value FROM registry_secrets"))]
    finally:
        engine.dispose()


def test_each_database_draws_its_own_secrets(scratch_database_url: str,
                                             database_url: str) -> None:
    command.upgrade(alembic_config(scratch_database_url), "head")
    drawn = dict(_secrets(scratch_database_url))
    # the console's cookie and CSRF signing key (the noise needs none: it comes from record keys)
    assert set(drawn) == {"console"}
    assert all(len(bytes.fromhex(value)) == 32 for value in drawn.values())
    suite = dict(_secrets(database_url))  # the suite's database has another one
    assert suite["console"] != drawn["console"]


def test_0003_keeps_the_query_log_and_drops_the_perturbation_secret(
        scratch_database_url: str) -> None:
    """Questions logged before releases existed keep their data snapshot through migration
    0003; the registry-wide perturbation secret is gone (the noise comes from record keys); no
    release exists until a steward cuts one. Downgrading draws a secret again."""
    config = alembic_config(scratch_database_url)
    command.upgrade(config, "0002")
    engine = make_engine(scratch_database_url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO sites (code, name, created_at) "
                                "VALUES ('TOR', 'T', CURRENT_TIMESTAMP)"))
        connection.execute(text(
            "INSERT INTO api_tokens (public_id, secret_sha256, role, created_at) "
            "VALUES ('tok', 'x', 'coordinator', CURRENT_TIMESTAMP)"))
        connection.execute(text(
            "INSERT INTO query_log (asked_at, token_id, query, snapshot, outcome) "
            "SELECT CURRENT_TIMESTAMP, id, 'counts?rows=hr_status', 'abc', 'answered' "
            "FROM api_tokens"))
    command.upgrade(config, "head")
    with engine.connect() as connection:
        assert connection.execute(text(
            "SELECT snapshot, release_id FROM query_log")).one() == ("abc", None)
        assert connection.execute(text(
            "SELECT count(*) FROM registry_secrets WHERE name = 'perturbation'")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM releases")).scalar() == 0
    command.downgrade(config, "0002")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM registry_secrets")).scalar() == 1
    engine.dispose()


def test_models_and_migrations_agree(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == [], "models changed without a migration: run `registry db revision`"


def test_there_is_one_head() -> None:
    from alembic.script import ScriptDirectory

    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_0005_applies_the_clinical_ruling_to_records_stored_before_it(
        scratch_database_url: str) -> None:
    """A record stored with a stop after progression loses its (negative) time off trastuzumab;
    a discontinuation in remission gets its remission-before-stop band."""
    import random

    from sqlalchemy import insert

    from registry.models import Record, Site
    from registry.services.intake.synthetic import synthetic_rows

    config = alembic_config(scratch_database_url)
    command.upgrade(config, "0004")
    engine = make_engine(scratch_database_url)
    with engine.begin() as connection:
        # The columns records had at 0004 (not the model's: a field added later is not there).
        columns = {column["name"] for column in inspect(connection).get_columns("records")}
        site = connection.execute(insert(Site.__table__).values(code="TOR", name="T")
                                  .returning(Site.__table__.c.id)).scalar_one()
        rows = synthetic_rows(random.Random(3), {site: "TOR"}, 2)
        for row, progression in zip(rows, (None, -50)):
            row.update(maintenance_status="discontinued", remission_start_day=100,
                       trastuzumab_stop_day=1000, discontinuation_reason="progression",
                       trastuzumab_resume_day=None, last_followup_day=3000,
                       progression_day=None if progression is None else 1000 + progression,
                       off_trastuzumab_days=2000 if progression is None else progression,
                       off_trastuzumab_band="3y_plus" if progression is None else "under_1y")
        connection.execute(insert(Record.__table__),
                           [{k: v for k, v in row.items() if k in columns} for row in rows])
    command.upgrade(config, "head")
    with engine.connect() as connection:
        stored = connection.execute(text(
            "SELECT progression_day, off_trastuzumab_days, off_trastuzumab_band, "
            "remission_before_stop_band FROM records ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row) for row in stored] == [(None, 2000, "3y_plus", "2_to_5y"),
                                              (950, None, "none", None)]


@pytest.mark.parametrize("revision, previous, source", [
    ("0006", "0005", "spreadsheet"),  # a version or an audit entry from a spreadsheet
    ("0007", "0006", "console"),  # a withdrawal made on the console's My site page
])
def test_a_new_source_is_admitted_by_the_audit_log_and_downgraded_to_api(
        scratch_database_url: str, revision: str, previous: str, source: str) -> None:
    """Before the revision the database refuses an audit entry from the new source; after it,
    it keeps one; going back turns it into 'api' so the older constraint holds again, and the
    append-only guard survives both ways."""
    from datetime import datetime, timezone

    from sqlalchemy import insert
    from sqlalchemy.exc import DatabaseError, IntegrityError

    from registry.models import AuditEntry, Site

    config = alembic_config(scratch_database_url)
    command.upgrade(config, previous)
    engine = make_engine(scratch_database_url)
    entry = {"occurred_at": datetime.now(timezone.utc), "subject_id": "TOR-abcdefghijklmnop",
             "action": "create", "source": source, "version": 1, "changed_fields": []}
    with engine.begin() as connection:
        site = connection.execute(insert(Site.__table__).values(code="TOR", name="T")
                                  .returning(Site.__table__.c.id)).scalar_one()
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(AuditEntry.__table__).values(site_id=site, **entry))
    engine.dispose()
    command.upgrade(config, revision)
    engine = make_engine(scratch_database_url)
    with engine.begin() as connection:
        connection.execute(insert(AuditEntry.__table__).values(site_id=site, **entry))
        assert connection.execute(text("SELECT source FROM audit_log")).scalar() == source
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(AuditEntry.__table__).values(
            site_id=site, **{**entry, "source": "fax"}))
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
        connection.execute(text("UPDATE audit_log SET version = 2"))  # the guard survived
    engine.dispose()
    command.downgrade(config, previous)
    engine = make_engine(scratch_database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT source FROM audit_log")).scalar() == "api"
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_log"))
    engine.dispose()
