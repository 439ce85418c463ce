"""Operations: rate limiting, request ids, request logs, metrics, statement timeouts, locks."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

from conftest import EXAMPLE_RECORD, get_database_of, migrate, without_subject
from live import needs_postgres
from registry import create_app, db, db_sqlite
from registry.db import unit_of_work
from registry.models import ApiToken, Record, Site
from registry.services.access.tokens import add_site, issue_token, resolve_token


@pytest.fixture()
def app_with(app: Flask, database_url: str) -> Callable[..., Flask]:
    """Factory: another app with some settings changed, on the test's rolled-back transaction."""

    def build(**settings: Any) -> Flask:
        other = create_app({"DATABASE_URL": database_url, "TESTING": True, **settings})
        joined, shared = get_database_of(other), get_database_of(app)
        joined.session_factory = shared.session_factory
        joined.autocommit = shared.autocommit
        joined.transactions = shared.transactions
        return other

    return build


def test_each_token_is_limited_on_its_own_with_problem_json_429(app_with, site_a, site_b):
    limited = app_with(REGISTRY_RATE_LIMIT="3 per minute").test_client()
    answers = [limited.get("/api/v1/records", headers=site_a) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers[:3]] == ["2", "1", "0"]
    assert all(answer.headers["X-RateLimit-Limit"] == "3" for answer in answers)
    assert "Retry-After" not in answers[0].headers
    refused = answers[-1]
    assert refused.mimetype == "application/problem+json"
    assert refused.json["status"] == 429 and refused.json["type"].endswith("/too-many-requests")
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert int(refused.headers["X-RateLimit-Reset"]) > 0
    # Another site's token has its own budget.
    assert limited.get("/api/v1/records", headers=site_b).status_code == 200


def test_limits_count_refused_writes_and_leave_health_checks_alone(app_with, site_a,
                                                                   example_record):
    limited = app_with(REGISTRY_RATE_LIMIT="2 per minute").test_client()
    subject_id, body = without_subject(example_record)
    assert limited.put(f"/api/v1/records/{subject_id}", json=body,
                       headers=site_a).status_code == 201
    assert limited.put(f"/api/v1/records/{subject_id}", json={}, headers=site_a).status_code == 422
    assert limited.put(f"/api/v1/records/{subject_id}", json=body,
                       headers=site_a).status_code == 429
    for path in ("/healthz", "/readyz", "/metrics"):
        for _ in range(3):
            answer = limited.get(path)
            assert answer.status_code == 200 and "X-RateLimit-Limit" not in answer.headers


def test_requests_without_a_token_are_limited_by_address(app_with):
    limited = app_with(REGISTRY_ADDRESS_RATE_LIMIT="2 per minute").test_client()
    seen = [limited.get("/api/v1/openapi.json", environ_base={"REMOTE_ADDR": "192.0.2.1"})
            .status_code for _ in range(3)]
    assert seen == [200, 200, 429]
    assert limited.get("/api/v1/openapi.json",
                       environ_base={"REMOTE_ADDR": "192.0.2.2"}).status_code == 200


def test_rate_limiting_can_be_switched_off(app_with, site_a):
    unlimited = app_with(REGISTRY_RATE_LIMIT="off").test_client()
    answers = [unlimited.get("/api/v1/records", headers=site_a) for _ in range(5)]
    assert {answer.status_code for answer in answers} == {200}
    assert "X-RateLimit-Limit" not in answers[0].headers


@pytest.mark.parametrize("settings", [
    {"REGISTRY_RATE_LIMIT": "lots please"},
    {"REGISTRY_RATE_LIMIT_STORAGE": "postgresql://db/limits"},
])
def test_unusable_rate_limit_settings_stop_the_start(settings, database_url):
    with pytest.raises(SystemExit):
        create_app({"DATABASE_URL": database_url, **settings})


NGINX_REQUEST_ID = "7f3a9c2eab4d4e0fa1b2c3d4e5f6a7b8"  # 32 hex digits, no run of 6 digits


def test_a_request_id_of_the_strict_random_shape_is_kept(client):
    assert client.get("/healthz", headers={"X-Request-ID": NGINX_REQUEST_ID}) \
        .headers["X-Request-ID"] == NGINX_REQUEST_ID
    own = "abcdefghijklmnopabcdefghijklmnop"
    assert client.get("/healthz", headers={"X-Request-ID": own}).headers["X-Request-ID"] == own


@pytest.mark.parametrize("sent", [
    "Smith.John.1950-03-03", "lb-7f3a-0001", "short", "has spaces in it", "x" * 65,
    "555-123-4567", "4165551234x", "7F3A9C2EAB4D4E0FA1B2C3D4E5F6A7B8",
    "00000000000000000000004165550199",  # the right shape, but holds a phone number
    "20190303aaaaaaaaaaaaaaaaaaaaaaaa",  # the right shape, but holds a date
    NGINX_REQUEST_ID + "0", "q" * 32,
])
def test_any_other_request_id_is_replaced_and_never_echoed_or_logged(client, sent, caplog):
    with caplog.at_level(logging.DEBUG):
        answer = client.get("/api/v1/records", headers={"X-Request-ID": sent})
    made_up = answer.headers["X-Request-ID"]
    assert made_up != sent and re.fullmatch("[a-p]{32}", made_up)
    assert sent not in answer.get_data(as_text=True) and sent not in str(answer.headers)
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert sent not in logged and made_up in logged


def test_request_ids_made_up_by_the_server_are_random_letters(client):
    made = {client.get("/healthz").headers["X-Request-ID"] for _ in range(50)}
    assert len(made) == 50 and all(re.fullmatch("[a-p]{32}", rid) for rid in made)


def test_one_log_line_per_request_with_route_template_and_no_values(client, site_a,
                                                                    example_record, caplog):
    subject_id, body = without_subject(example_record)
    with caplog.at_level(logging.INFO, logger="registry"):
        client.put(f"/api/v1/records/{subject_id}", json=body,
                   headers={**site_a, "X-Request-ID": NGINX_REQUEST_ID})
        client.get("/api/v1/records/NOPE-123", headers=site_a)
        client.get("/nowhere/at/all")
    lines = [record for record in caplog.records if record.name == "registry.requests"]
    assert [(line.method, line.route, line.status) for line in lines] == [
        ("PUT", "/api/v1/records/<subject_id>", 201),
        ("GET", "/api/v1/records/<subject_id>", 404),
        ("GET", "(unmatched)", 404),
    ]
    assert lines[0].request_id == NGINX_REQUEST_ID
    assert lines[0].role == "submitter" and lines[0].token in site_a["Authorization"]
    assert lines[2].token is None
    assert all(line.duration_ms >= 0 for line in lines)
    everything = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert subject_id not in everything and "NOPE-123" not in everything
    assert site_a["Authorization"].split()[-1] not in everything
    assert "lesion" not in everything and "two_to_five" not in everything


def _sample(metrics: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(prefix))


def test_metrics_count_requests_by_route_and_records_by_outcome(client, site_a, example_record):
    subject_id, body = without_subject(example_record)
    route = 'registry_http_requests_total{method="PUT",route="/api/v1/records/<subject_id>"'
    before = client.get("/metrics").get_data(as_text=True)
    client.put(f"/api/v1/records/{subject_id}", json=body, headers=site_a)
    client.put(f"/api/v1/records/{subject_id}", json=body, headers=site_a)
    client.post("/api/v1/records/batch", json={"records": [{"subject_id": "TOR-000x"}]},
                headers=site_a)
    after = client.get("/metrics")
    assert after.status_code == 200 and after.mimetype == "text/plain"
    text_after = after.get_data(as_text=True)
    assert _sample(text_after, route + ',status="201"}') \
        - _sample(before, route + ',status="201"}') == 1
    assert _sample(text_after, route + ',status="200"}') \
        - _sample(before, route + ',status="200"}') == 1
    for via, outcome in (("put", "created"), ("put", "unchanged"), ("batch", "rejected")):
        name = f'registry_records_total{{outcome="{outcome}",via="{via}"}}'
        assert _sample(text_after, name) - _sample(before, name) == 1, name
    assert subject_id not in text_after


@pytest.mark.postgres_only
@needs_postgres
def test_statements_longer_than_the_timeout_are_cancelled(database_url):
    short = create_app({"DATABASE_URL": database_url, "REGISTRY_STATEMENT_TIMEOUT_MS": 200})
    with short.app_context():
        with unit_of_work() as session:
            assert session.execute(text("SHOW statement_timeout")).scalar() == "200ms"
        with pytest.raises(OperationalError) as cancelled:
            with unit_of_work() as session:
                session.execute(text("SELECT pg_sleep(2)"))
        assert "statement timeout" in str(cancelled.value.orig)
    get_database_of(short).engine.dispose()


def test_the_contract_documents_the_429_of_every_limited_operation(app):
    import yaml

    from registry.cli import openapi_text

    spec = yaml.safe_load(openapi_text())
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            documented = "429" in operation["responses"]
            assert documented == path.startswith("/api/v1/"), f"{method} {path}"
    headers = spec["components"]["responses"]["TOO_MANY_REQUESTS"]["headers"]
    assert {"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(headers)


def _redis_answers(url: str = "redis://127.0.0.1:6379") -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001  (any failure means: no Redis here)
        return False


@pytest.mark.skipif(not _redis_answers(), reason="no Redis on 127.0.0.1:6379")
def test_instances_sharing_redis_share_one_limit(app_with, site_a):
    settings = {"REGISTRY_RATE_LIMIT": "3 per minute",
                "REGISTRY_RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379",
                # Redis is shared: this run's keys carry a prefix of their own.
                "REGISTRY_RATE_LIMIT_PREFIX": f"test-i11-{uuid.uuid4().hex}"}
    first, second = app_with(**settings).test_client(), app_with(**settings).test_client()
    statuses = [client.get("/api/v1/records", headers=site_a).status_code
                for client in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]
    refused = second.get("/api/v1/records", headers=site_a)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def _sqlite_app(path, **settings: Any) -> Flask:  # noqa: ANN001
    """An app on a migrated SQLite file of its own (outside the test's joined transaction)."""
    migrate(f"sqlite:///{path}")
    return create_app({"DATABASE_URL": f"sqlite:///{path}", "TESTING": True, **settings})


def test_on_sqlite_reads_never_wait_for_a_writer(tmp_path) -> None:
    # Every request checks its token, and reads (a record, a page, readiness) take no write lock:
    # none of them queues behind a writer (here: another connection) for as long as it writes.
    path = tmp_path / "locks.db"
    app = _sqlite_app(path)
    with app.app_context():
        add_site("TOR", "Toronto")
        secret = issue_token("submitter", "TOR")[1]
        resolve_token(secret)  # the first use stamps last_used_at, a write of its own
    client, bearer = app.test_client(), {"Authorization": f"Bearer {secret}"}
    subject_id, record = without_subject(EXAMPLE_RECORD)
    assert client.put(f"/api/v1/records/{subject_id}", json=record,
                      headers=bearer).status_code == 201

    def read() -> None:
        answered.extend(client.get(url, headers=bearer).status_code for url in (
            "/api/v1/records", f"/api/v1/records/{subject_id}",
            f"/api/v1/records/{subject_id}/history", "/readyz"))

    answered: list[int] = []
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=10)
        assert answered == [200, 200, 200, 200], "a read waited for the writer"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        reader.join()
    with app.app_context():
        with unit_of_work() as session:
            assert session.scalar(select(ApiToken.last_used_at)) is not None
        get_database_of(app).engine.dispose()


def test_on_sqlite_a_writer_keeps_asking_for_the_write_lock_then_writes(tmp_path) -> None:
    # SQLite's busy handler would sleep ever longer between tries (up to 100 ms), so a writer
    # could sleep through the moments the lock is free; the registry asks at most 4 ms apart.
    app = _sqlite_app(tmp_path / "queue.db")
    attempts: list[int] = []
    event.listen(get_database_of(app).engine, "before_cursor_execute",
                 lambda *args: attempts.append(1) if args[2] == "BEGIN IMMEDIATE" else None)
    holder = sqlite3.connect(tmp_path / "queue.db", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, holder.execute, ["ROLLBACK"])
    release.start()
    try:
        with app.app_context():
            add_site("TOR", "Toronto")
            with unit_of_work() as session:
                assert session.scalar(select(Site.code)) == "TOR"
    finally:
        release.join()
        holder.close()
    assert len(attempts) >= 10  # about 75 while the lock was held; SQLite's handler: 1
    get_database_of(app).engine.dispose()


def test_on_sqlite_the_writer_queue_makes_writers_wait_for_each_other(tmp_path) -> None:
    # REGISTRY_SQLITE_WRITER_QUEUE=on: a write transaction holds the lock file beside the
    # database until its connection is back in the pool; another writer (another engine, as
    # another worker would be) waits on it, then writes. Reads do not take it.
    from registry.db import make_engine

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    first, second = (make_engine(url, sqlite_writer_queue=True) for _ in range(2))
    with first.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE probe (n INTEGER)")
    done = threading.Event()

    def write() -> None:
        with second.begin() as connection:
            connection.exec_driver_sql("INSERT INTO probe VALUES (2)")
        done.set()

    try:
        with first.begin() as connection:
            connection.exec_driver_sql("INSERT INTO probe VALUES (1)")
            writer = threading.Thread(target=write)
            writer.start()
            assert not done.wait(0.3)  # queued behind the open transaction
            with second.execution_options(**{db.SQLITE_DEFERRED: True}).begin() as reader:
                assert reader.exec_driver_sql("SELECT count(*) FROM probe").scalar() == 0
        writer.join(5)
        assert done.is_set()
        with first.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM probe").scalar() == 2
        assert (tmp_path / "queue.db-writers").exists()
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.parametrize("queue", ["on", "off"])
def test_on_sqlite_a_writer_gives_up_after_the_busy_timeout(tmp_path, monkeypatch, queue) -> None:
    # The wait for the write lock ends as a wait for any unavailable database: 503, Retry-After.
    # (With the writers' queue on, the queue is free here: another program holds the lock.)
    app = _sqlite_app(tmp_path / "held.db", REGISTRY_SQLITE_WRITER_QUEUE=queue)
    with app.app_context():
        add_site("TOR", "Toronto")
        secret = issue_token("submitter", "TOR")[1]
        resolve_token(secret)
    monkeypatch.setattr(db_sqlite, "SQLITE_BUSY_TIMEOUT_MS", 200)
    subject_id, record = without_subject(EXAMPLE_RECORD)
    holder = sqlite3.connect(tmp_path / "held.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        answer = app.test_client().put(f"/api/v1/records/{subject_id}", json=record,
                                       headers={"Authorization": f"Bearer {secret}"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
    assert int(answer.headers["Retry-After"]) > 0
    with app.app_context():
        with unit_of_work() as session:
            assert session.scalar(select(func.count()).select_from(Record)) == 0
        get_database_of(app).engine.dispose()


def _descriptors_of(path) -> int:  # noqa: ANN001
    """How many descriptors of this process are open on `path`."""
    found = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{name}") == str(path)
        except OSError:  # the descriptor listdir itself used, closed since
            pass
    return found


def _lock_is_free(path) -> bool:  # noqa: ANN001
    """Whether nobody holds the flock on `path`."""
    descriptor = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)


def _join_lock_waiters(before: set[threading.Thread]) -> None:
    """Wait for the threads that waited on the writers' lock since `before` to end."""
    for thread in set(threading.enumerate()) - before:
        if thread.name == "registry-writers-lock":
            thread.join(10)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_on_sqlite_a_queued_writer_gives_up_after_the_busy_timeout(tmp_path, monkeypatch):
    # With the writers' queue on, another registry writer (another engine, as another worker
    # would be) holds the queue's lock in an open transaction: a PUT waits for it no longer
    # than the busy timeout, answers 503 with Retry-After and writes nothing; the lock is then
    # free again once the holder is done (the writer that gave up left no lock), a PUT that
    # waits while the holder finishes writes, and in the end no descriptor or thread is left.
    from registry.db import make_engine

    path = tmp_path / "queued.db"
    app = _sqlite_app(path, REGISTRY_SQLITE_WRITER_QUEUE="on")
    with app.app_context():
        add_site("TOR", "Toronto")
        secret = issue_token("submitter", "TOR")[1]
        resolve_token(secret)
    client, bearer = app.test_client(), {"Authorization": f"Bearer {secret}"}
    subject_id, record = without_subject(EXAMPLE_RECORD)
    holder = make_engine(f"sqlite:///{path}", sqlite_writer_queue=True)
    answers: list[Any] = []
    before = set(threading.enumerate())

    def put() -> None:
        answers.append(client.put(f"/api/v1/records/{subject_id}", json=record, headers=bearer))

    monkeypatch.setattr(db_sqlite, "SQLITE_BUSY_TIMEOUT_MS", 200)
    try:
        with holder.begin() as connection:
            connection.exec_driver_sql("UPDATE sites SET name = name")
            writer = threading.Thread(target=put)
            writer.start()
            writer.join(20)
            assert not writer.is_alive(), "the writer waited for the queue without limit"
        [refused] = answers
        assert refused.status_code == 503 and refused.mimetype == "application/problem+json"
        assert int(refused.headers["Retry-After"]) > 0
        _join_lock_waiters(before)  # the one that was left the descriptor lets go of it
        assert _lock_is_free(f"{path}-writers")

        monkeypatch.setattr(db_sqlite, "SQLITE_BUSY_TIMEOUT_MS", 30_000)
        waiting = set(threading.enumerate())
        with holder.begin() as connection:
            connection.exec_driver_sql("UPDATE sites SET name = name")
            writer = threading.Thread(target=put)
            writer.start()
            for _ in range(1000):  # until the writer waits in its connection's thread
                if any(thread.name == "registry-writers-lock"
                       for thread in set(threading.enumerate()) - waiting):
                    break
                writer.join(0.01)
        writer.join(20)
        assert answers[1].status_code == 201
        assert _lock_is_free(f"{path}-writers")  # released when its connection was back
        with app.app_context():
            with unit_of_work() as session:
                assert session.scalar(select(func.count()).select_from(Record)) == 1
    finally:
        holder.dispose()
        get_database_of(app).engine.dispose()
    _join_lock_waiters(before)
    assert not [thread for thread in set(threading.enumerate()) - before
                if thread.name == "registry-writers-lock"]
    assert _descriptors_of(f"{path}-writers") == 0


@pytest.mark.parametrize("ending", ["returned", "invalidated"])
def test_on_sqlite_a_writer_connection_lets_go_of_the_queue(tmp_path, ending) -> None:
    # A connection holding the writers' lock releases it when it returns to the pool, and
    # when it is invalidated (a lost database): the next writer never waits for it.
    from registry.db import make_engine

    url = f"sqlite:///{tmp_path / 'ended.db'}"
    engine = make_engine(url, sqlite_writer_queue=True)
    try:
        connection = engine.connect()
        connection.begin()
        assert not _lock_is_free(f"{tmp_path / 'ended.db'}-writers")
        if ending == "invalidated":
            connection.invalidate()
        connection.close()
        assert _lock_is_free(f"{tmp_path / 'ended.db'}-writers")
    finally:
        engine.dispose()
