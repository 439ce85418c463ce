"""B3's pgbench baseline runs what a PUT sends (benchmarks/put_statements.py).

The statements of a real PUT are captured with a SQLAlchemy event listener and compared with
the ones the script is generated from; the script, run by pgbench, writes as a PUT does: the
record at the next version, one version row and one audit entry per transaction.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from benchmarks.put_statements import compiled_sql, pgbench_script, put_statements
from conftest import EXAMPLE_RECORD, get_database_of, migrate, without_subject
from live import needs_postgres, own_database
from registry import create_app
from registry.core.record import canonical
from registry.db import unit_of_work, utcnow
from registry.models import AuditEntry, Record, RecordVersion
from registry.services.intake.record_rows import changes_between
from registry.services.access.tokens import add_site, issue_token, resolve_token

pytestmark = [pytest.mark.postgres_only, needs_postgres]

_, FIRST = without_subject(EXAMPLE_RECORD)
SECOND = {**FIRST, "last_followup_day": FIRST["last_followup_day"] + 30,
          "disease_status_last": "stable"}
SUBJECTS = [f"TOR-bench-{n}" for n in range(10000, 10004)]


@pytest.fixture(scope="module")
def bench_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str, str]]:
    """The real app on a database of its own (every write commits), a submitter's token, and
    the database's URL; the subjects stored with FIRST."""
    with own_database("bench", tmp_path_factory.mktemp("bench")) as url:
        migrate(url)
        app = create_app({"DATABASE_URL": url, "REGISTRY_RATE_LIMIT": "off"})
        with app.app_context():
            add_site("TOR", "Toronto")
            token = issue_token("submitter", "TOR")[1]
        client = app.test_client()
        for subject in SUBJECTS:
            answer = client.put(f"/api/v1/records/{subject}", json=FIRST,
                                headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 201
        yield app, token, url
        get_database_of(app).engine.dispose()


def _captured_put(app: Flask, token: str, subject: str, body: dict[str, Any]) -> list[str]:
    """The statements (and COMMITs) the database receives during one PUT."""
    engine = get_database_of(app).engine
    seen: list[str] = []

    def statement(_conn, _cursor, text, _params, _context, _many) -> None:  # noqa: ANN001
        seen.append(text)

    def commit(_conn) -> None:  # noqa: ANN001
        seen.append("COMMIT")

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        answer = app.test_client().put(f"/api/v1/records/{subject}", json=body,
                                       headers={"Authorization": f"Bearer {token}"})
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)
    assert answer.status_code == 200 and answer.get_json()["version"] >= 2
    return seen


def test_the_script_is_made_of_the_statements_a_put_sends(bench_app):
    app, token, _ = bench_app
    seen = _captured_put(app, token, SUBJECTS[0], SECOND)
    statements = [compiled_sql(statement) for statement in put_statements().values()]
    # The token's statement commits on its own (autocommit); the lock and the write share one
    # transaction, which commits.
    assert [text for text in seen if text != "COMMIT"] == statements
    assert seen[seen.index(statements[1]):] == [*statements[1:], "COMMIT"]
    # The script holds each of them whole, in order, a pgbench variable for each parameter.
    script = _parameters_blanked(_generated(app, token)[0], PGBENCH_VARIABLE)
    positions = [script.index(_parameters_blanked(text, PLACEHOLDER) + ";\n")
                 for text in statements]
    assert positions == sorted(positions)
    assert script.index("BEGIN;") < positions[1] and script.index("COMMIT;") > positions[2]


PGBENCH_VARIABLE = re.compile(r"(?<!:):\w+")  # not the casts (::JSON)
PLACEHOLDER = re.compile(r"%\(\w+\)s")


def _parameters_blanked(text: str, parameter: re.Pattern) -> str:
    return parameter.sub("?", text)


def _generated(app: Flask, token: str) -> tuple[str, dict[str, str]]:
    with app.app_context():
        caller = resolve_token(token)
    record = canonical({**SECOND, "subject_id": SUBJECTS[0]})
    return pgbench_script(
        public_id=caller.public_id, site_id=caller.site_id, token_id=caller.token_id,
        record=record, changed_fields=list(changes_between(canonical(
            {**FIRST, "subject_id": SUBJECTS[0]}), record)),
        subject_prefix="TOR-bench-", first_subject=10000, subjects_per_client=2, now=utcnow())


@pytest.mark.skipif(shutil.which("pgbench") is None, reason="needs pgbench")
def test_pgbench_running_the_script_writes_as_a_put_does(bench_app, tmp_path: Path):
    app, token, url = bench_app

    def state() -> tuple[int, int, int, int, set[datetime]]:
        with app.app_context(), unit_of_work(read_only=True) as session:
            versions = session.scalar(select(func.sum(Record.version)).where(
                Record.subject_id.in_(SUBJECTS)))
            return (versions, session.scalar(select(func.count(RecordVersion.id))),
                    session.scalar(select(func.count(AuditEntry.id)).where(
                        AuditEntry.action == "update")),
                    session.scalar(select(func.count(Record.id)).where(
                        Record.last_followup_day == SECOND["last_followup_day"])),
                    set(session.scalars(select(RecordVersion.created_at))))

    before = state()
    script, constants = _generated(app, token)
    (tmp_path / "put.sql").write_text(script)
    address = make_url(url)
    command = ["pgbench", "--no-vacuum", "--protocol=prepared", "--client=2", "--jobs=1",
               "--transactions=5", f"--file={tmp_path / 'put.sql'}",
               f"--host={address.host}", f"--port={address.port or 5432}",
               f"--username={address.username}"]
    for name, value in constants.items():
        command += ["--define", f"{name}={value}"]
    finished = subprocess.run([*command, address.database], capture_output=True, text=True,
                              env={"PGPASSWORD": address.password or "", "PATH": "/usr/bin"})
    assert finished.returncode == 0, finished.stderr
    assert "number of failed transactions: 0" in finished.stdout
    after = state()
    # Ten transactions: each moved one record one version on, with one version and one audit
    # entry; every subject the clients touched holds the script's record.
    assert after[0] - before[0] == 10
    assert after[1] - before[1] == 10
    assert after[2] - before[2] == 10
    assert after[3] >= 2
    # Each transaction writes a time of its own, as each PUT does, and the record's updated_at
    # (indexed) moves with it: with one time for all, PostgreSQL would update the row in place
    # without its indexes, which a PUT cannot do.
    written = after[4] - before[4]
    assert len(written) == 10
    with app.app_context(), unit_of_work(read_only=True) as session:
        assert set(session.scalars(select(Record.updated_at).where(
            Record.subject_id.in_(SUBJECTS)))) & written


def test_the_token_lookup_commits_alone_and_leaves_its_connection_transactional(bench_app):
    # The token lookup runs in the driver's autocommit mode (no BEGIN, no COMMIT); the same
    # pooled connection then serves a real transaction: BEGIN is sent and ROLLBACK undoes it.
    from psycopg.pq import TransactionStatus

    from registry.db import Database, make_engine

    url = bench_app[2]
    database = Database(make_engine(url, pool_size=1))
    try:
        with database.autocommit.begin() as connection:
            driver = connection.connection.driver_connection
            connection.exec_driver_sql("SELECT 1")
            assert driver.autocommit
            assert driver.info.transaction_status == TransactionStatus.IDLE
        with database.transactions.connect() as connection:
            assert connection.connection.driver_connection is driver
            assert not driver.autocommit
            with connection.begin() as outer:
                connection.exec_driver_sql("CREATE TEMPORARY TABLE probe (n int)")
                assert driver.info.transaction_status == TransactionStatus.INTRANS
                outer.rollback()
            assert connection.exec_driver_sql(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'probe'").scalar() == 0
    finally:
        database.engine.dispose()


def test_a_request_takes_one_pooled_connection_and_gives_it_back(bench_app):
    # The token lookup (autocommit) and the PUT's transaction share the request's one pooled
    # connection, which is back in the pool, out of autocommit, when the answer is out; also
    # after a refused request. A token revoked between two requests fails the second.
    from registry.services.access.tokens import revoke_token

    app, _, _ = bench_app
    engine = get_database_of(app).engine
    with app.app_context():
        token = issue_token("submitter", "TOR")[1]
    checkouts: list[Any] = []

    def checkout(dbapi_connection, _record, _proxy) -> None:  # noqa: ANN001
        checkouts.append(dbapi_connection)

    event.listen(engine.pool, "checkout", checkout)
    try:
        client = app.test_client()

        def put() -> int:
            return client.put(f"/api/v1/records/{SUBJECTS[1]}", json=SECOND,
                              headers={"Authorization": f"Bearer {token}"}).status_code

        assert put() == 200
        assert len(checkouts) == 1 and engine.pool.checkedout() == 0
        assert not checkouts[0].autocommit
        with app.app_context():
            revoke_token(token.split("_")[1])
        assert put() == 401
        assert len(checkouts) == 3 and engine.pool.checkedout() == 0  # the revocation's own
        assert not checkouts[2].autocommit
    finally:
        event.remove(engine.pool, "checkout", checkout)
    # SQLAlchemy's own autocommit (isolation_level) is left alone by the registry's.
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        connection.exec_driver_sql("SELECT 1")
        assert connection.connection.driver_connection.autocommit
