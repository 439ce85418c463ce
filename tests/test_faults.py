"""Faults on PostgreSQL: the database vanishes under load and comes back.

The shared PostgreSQL server is never stopped: the app reaches its own database through a TCP
relay of this test's (cut and restored), or has its connections killed with
pg_terminate_backend. Requests during the outage answer 503 with Retry-After and never 500, no
batch is half written, and the service recovers by itself within 10 s.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from benchmarks.put_statements import compiled_sql, put_statements
from conftest import EXAMPLE_RECORD, get_database_of, migrate, without_subject
from live import TcpProxy, needs_postgres, own_database
from registry import create_app
from registry.db import first_hot, transaction, unit_of_work
from registry.models import Record
from registry.services.access.tokens import add_site, issue_token

pytestmark = [pytest.mark.postgres_only, needs_postgres]

_, BODY = without_subject(EXAMPLE_RECORD)
BATCH_SIZE = 10
RECOVERY_SECONDS = 10


@dataclass
class Outcomes:
    """What the load saw: (when, status, Retry-After) of each answer, and the batches sent."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[tuple[float, int, str | None]] = field(default_factory=list)
    batches: dict[str, int] = field(default_factory=dict)  # batch prefix -> status
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def note(self, status: int, retry_after: str | None, batch: str | None = None) -> None:
        """Record one answer."""
        with self.lock:
            self.answers.append((time.monotonic(), status, retry_after))
            if batch is not None:
                self.batches[batch] = status


def _load(app: Flask, headers: dict, outcomes: Outcomes, stop: threading.Event) -> None:
    client = app.test_client()
    while not stop.is_set():
        number = next(outcomes.numbers)
        if number % 2:
            answer = client.put(f"/api/v1/records/TOR-fault-{number % 40:04d}",
                                json={**BODY, "last_followup_day": 3000 + number},
                                headers=headers)
            outcomes.note(answer.status_code, answer.headers.get("Retry-After"))
        else:
            prefix = f"TOR-b{number:05d}"
            answer = client.post("/api/v1/records/batch", headers=headers, json={"records": [
                # Letters after the number: 7 digits in a row would be refused as identifier-like.
                {**EXAMPLE_RECORD, "subject_id": f"{prefix}-{chr(ord('a') + n)}"}
                for n in range(BATCH_SIZE)]})
            outcomes.note(answer.status_code, answer.headers.get("Retry-After"), prefix)
        time.sleep(0.01)


@pytest.fixture()
def proxied_app(tmp_path: Path) -> Iterator[tuple[Flask, dict, TcpProxy, str]]:
    """The real app reaching a database of its own through a relay that can be cut."""
    with own_database("fault", tmp_path) as url:
        migrate(url)
        real = make_url(url)
        proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
        through = real.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)
        app = create_app({"DATABASE_URL": through, "REGISTRY_RATE_LIMIT": "off"})
        with app.app_context():
            add_site("TOR", "Toronto")
            headers = {"Authorization": "Bearer " + issue_token("submitter", "TOR")[1]}
        try:
            yield app, headers, proxy, url
        finally:
            get_database_of(app).engine.dispose()
            proxy.close()


def _under_load(app: Flask, headers: dict, outage: Callable[[], float]) -> Outcomes:
    """Run 4 clients, call outage() (which returns when the database came back), and keep the
    load on until the service has answered successfully again (or the recovery time ran out)."""
    outcomes, stop = Outcomes(), threading.Event()
    clients = [threading.Thread(target=_load, args=(app, headers, outcomes, stop))
               for _ in range(4)]
    for client in clients:
        client.start()
    try:
        time.sleep(1.5)
        back = outage()
        deadline = back + RECOVERY_SECONDS + 2
        while time.monotonic() < deadline:
            with outcomes.lock:
                recovered = sum(1 for when, status, _ in outcomes.answers
                                if when > back + 0.5 and status < 300)
            if recovered >= 8:
                break
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for client in clients:
            client.join()
    outcomes.back = back  # type: ignore[attr-defined]
    return outcomes


def _assert_survived(app: Flask, outcomes: Outcomes) -> None:
    statuses = {status for _, status, _ in outcomes.answers}
    assert statuses <= {200, 201, 503}, statuses
    assert 503 in statuses, "the outage was not felt: the test proves nothing"
    assert all(retry for _, status, retry in outcomes.answers if status == 503)
    back = outcomes.back  # type: ignore[attr-defined]
    first_success = min((when for when, status, _ in outcomes.answers
                         if when > back and status < 300), default=None)
    assert first_success is not None and first_success - back <= RECOVERY_SECONDS
    print(f"{len(outcomes.answers)} requests, "
          f"{sum(1 for _, s, _ in outcomes.answers if s == 503)} answered 503, "
          f"{len(outcomes.batches)} batches; recovered {first_success - back:.2f} s after the "
          "database came back")
    with app.app_context(), unit_of_work() as session:
        for prefix, status in outcomes.batches.items():
            stored = session.scalar(select(func.count()).select_from(Record).where(
                Record.subject_id.startswith(prefix + "-")))
            assert stored in (0, BATCH_SIZE), f"batch {prefix} is half written: {stored}"
            if status == 200:
                assert stored == BATCH_SIZE, f"acknowledged batch {prefix} is missing"


def test_network_to_the_database_cut_and_restored(proxied_app):
    app, headers, proxy, _ = proxied_app
    client = app.test_client()

    def outage() -> float:
        proxy.cut()
        time.sleep(1.0)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        time.sleep(2.0)
        proxy.restore()
        return time.monotonic()

    outcomes = _under_load(app, headers, outage)
    _assert_survived(app, outcomes)
    assert client.get("/readyz").status_code == 200


def test_database_connections_killed_under_load(proxied_app):
    app, headers, _, url = proxied_app
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = make_url(url).database

    def outage() -> float:
        with admin.connect() as connection:
            for _ in range(6):
                connection.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
                time.sleep(0.3)
        return time.monotonic()

    try:
        outcomes = _under_load(app, headers, outage)
    finally:
        admin.dispose()
    _assert_survived(app, outcomes)


# A PUT's token lookup, row lock and write go to psycopg's cursor without SQLAlchemy's execution
# context (registry.db.first_hot, execute_hot), and its transaction is psycopg's own: their
# errors must still be wrapped and invalidate the pool as SQLAlchemy's own statements do.

@contextmanager
def _rollbacks(app: Flask) -> Iterator[list[object]]:
    """The ROLLBACKs the app's engine sends while the block runs (its rollback events)."""
    seen: list[object] = []
    engine = get_database_of(app).engine
    rolled_back = seen.append  # one bound method, to remove the listener again
    event.listen(engine, "rollback", rolled_back)
    try:
        yield seen
    finally:
        event.remove(engine, "rollback", rolled_back)


def test_a_driver_error_on_a_put_s_own_path_is_wrapped_and_rolled_back(proxied_app):
    app, _, _, _ = proxied_app
    lock = put_statements()["lock"]
    with app.test_request_context():
        with _rollbacks(app) as rollbacks, pytest.raises(DBAPIError) as caught:
            with transaction() as connection:
                assert first_hot(connection, lock, {"site_id": 1, "subject_id": "TOR-0"}) is None
                first_hot(connection, lock, {"site_id": 1, "subject_id": "TOR-\x00-secret"})
        assert len(rollbacks) == 1  # SQLAlchemy's own; the block adds none to an idle driver
        assert isinstance(caught.value.orig, psycopg.DataError)
        assert not caught.value.connection_invalidated
        assert "parameters hidden" in str(caught.value) and "secret" not in str(caught.value)
        # The request's connection is usable again: its transaction was rolled back.
        driver = connection.connection.driver_connection
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with transaction() as connection:
            assert first_hot(connection, lock, {"site_id": 1, "subject_id": "TOR-0"}) is None


def test_an_error_of_the_code_in_a_put_s_transaction_rolls_it_back(proxied_app):
    # A refusal raised after the row lock (a 409 or 412) leaves the driver's transaction open:
    # the block rolls it back, once, and the row lock is let go at once.
    app, _, _, _ = proxied_app
    lock = put_statements()["lock"]
    with app.test_request_context(), _rollbacks(app) as rollbacks:
        with pytest.raises(LookupError):
            with transaction() as connection:
                first_hot(connection, lock, {"site_id": 1, "subject_id": "TOR-0"})
                driver = connection.connection.driver_connection
                assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
                raise LookupError
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert len(rollbacks) == 1


def test_a_connection_lost_in_a_put_s_transaction_answers_503_and_invalidates_the_pool(
        proxied_app):
    app, headers, _, url = proxied_app
    client = app.test_client()
    path = "/api/v1/records/TOR-lost-0001"
    assert client.put(path, json=BODY, headers=headers).status_code == 201
    engine = get_database_of(app).engine

    def pooled_backends() -> set[int]:
        with engine.connect() as one, engine.connect() as two:
            return {connection.connection.driver_connection.info.backend_pid
                    for connection in (one, two)}

    before = pooled_backends()
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    lock_sql = compiled_sql(put_statements()["lock"])

    def kill_before_the_row_lock(_conn, cursor, statement, *_args) -> None:  # noqa: ANN001
        if statement == lock_sql:
            with admin.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid, 5000)"),
                                   {"pid": cursor.connection.info.backend_pid})

    event.listen(engine, "before_cursor_execute", kill_before_the_row_lock)
    try:
        answer = client.put(path, json={**BODY, "last_followup_day": 4000}, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", kill_before_the_row_lock)
        admin.dispose()
    # 503, not 500: the driver's error was wrapped (an OperationalError of SQLAlchemy's).
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    # Every connection opened before the loss is replaced, not only the lost one.
    assert not pooled_backends() & before
    assert client.put(path, json={**BODY, "last_followup_day": 4001},
                      headers=headers).status_code == 200


def test_a_connection_lost_at_the_token_lookup_is_wrapped_and_the_next_request_reconnects(
        proxied_app):
    app, headers, _, url = proxied_app
    client = app.test_client()
    assert client.get("/api/v1/records", headers=headers).status_code == 200
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"),
                {"name": make_url(url).database})
    finally:
        admin.dispose()
    errors: list[BaseException] = []
    event.listen(get_database_of(app).engine, "handle_error",
                 lambda context: errors.append(context.sqlalchemy_exception))
    answer = client.get("/api/v1/records", headers=headers)
    assert answer.status_code == 503
    assert len(errors) == 1 and isinstance(errors[0], OperationalError)
    assert errors[0].connection_invalidated
    assert client.get("/api/v1/records", headers=headers).status_code == 200
