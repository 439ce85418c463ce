"""A subject being withdrawn is never answered `unchanged` (committed writes, on PostgreSQL and
SQLite).

Each race holds a withdrawal open (record erased, not yet committed) while an identical batch,
or an identical PUT, arrives: the batch's resend shortcut read the last committed state and
answered `unchanged` (version 1) for a subject that no longer existed. Now the resend is
confirmed under the write's locks (PostgreSQL: the row lock; SQLite: the database's write lock):
the batch waits for the withdrawal and rejects the record as subject_withdrawn. The withdrawal is
let go once the resend is seen waiting for its lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from conftest import EXAMPLE_RECORD, get_database_of, migrate, without_subject
from live import on_postgres, own_database
from registry import create_app
from registry.services.access.tokens import add_site, issue_token

RACES = 50
HELD = "withdrawal-held"  # the name of the thread whose commit waits


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, dict, str]]:
    """The real app on a migrated database of its own, a submitter's headers, the URL."""
    with own_database("withdrawal", tmp_path_factory.mktemp("withdrawal")) as url:
        migrate(url)
        app = create_app({"DATABASE_URL": url, "REGISTRY_RATE_LIMIT": "off"})
        with app.app_context():
            add_site("TOR", "Toronto")
            headers = {"Authorization": "Bearer " + issue_token("submitter", "TOR")[1]}
        yield app, headers, url
        get_database_of(app).engine.dispose()


class HeldCommit:
    """Holds the commit of sessions made in the thread named HELD until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()  # the held thread has written and waits to commit
        self.release = threading.Event()
        event.listen(Session, "before_commit", self._wait)

    def _wait(self, session: Session) -> None:
        if threading.current_thread().name == HELD:
            session.flush()  # whatever the withdrawal still holds pending reaches the database
            self.entered.set()
            self.release.wait(timeout=20)

    def close(self) -> None:
        """Stop holding commits."""
        event.remove(Session, "before_commit", self._wait)


class LockWatch:
    """Tells whether a request waits for a lock the held withdrawal keeps: on PostgreSQL as the
    server sees it; on SQLite when the app's engine is told the database is busy (a writer then
    asks again for the write lock), or, with the writers' queue, when a request for the queue's
    flock is blocked (Linux's /proc/locks)."""

    def __init__(self, app: Flask, url: str) -> None:
        self.busy = threading.Event()
        self.engine = get_database_of(app).engine
        self.probe = create_engine(url) if on_postgres() else None
        self.queue = f"{make_url(url).database}-writers"
        if self.probe is None:
            event.listen(self.engine, "handle_error", self._told_busy)

    def _told_busy(self, context: Any) -> None:
        if threading.current_thread().name != HELD and "locked" in str(context.original_exception):
            self.busy.set()

    def _queued(self) -> bool:
        if not (os.path.exists(self.queue) and os.path.exists("/proc/locks")):
            return False
        inode = f":{os.stat(self.queue).st_ino}"
        with open("/proc/locks") as locks:
            return any("->" in line and any(field.endswith(inode) for field in line.split())
                       for line in locks)

    def waiting(self) -> bool:
        """Whether someone waits for the withdrawal's lock now (or did, on SQLite)."""
        if self.probe is None:
            return self.busy.is_set() or self._queued()
        with self.probe.connect() as connection:
            return bool(connection.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'")))

    def close(self) -> None:
        """Stop watching."""
        if self.probe is None:
            event.remove(self.engine, "handle_error", self._told_busy)
        else:
            self.probe.dispose()


def _race(app: Flask, headers: dict, url: str, subject_id: str, send: str) -> Any:
    """Withdraw `subject_id` while `send` (batch or put) of its identical record arrives."""
    record = {**EXAMPLE_RECORD, "subject_id": subject_id}
    batch = {"records": [record]}
    client = app.test_client()
    created = client.post("/api/v1/records/batch", json=batch, headers=headers)
    assert created.json["results"][0]["outcome"] == "created"
    assert client.post("/api/v1/records/batch", json=batch, headers=headers) \
        .json["results"][0]["outcome"] == "unchanged"  # the shortcut is there to be raced

    answers: dict[str, Any] = {}
    held = HeldCommit()
    withdrawal = threading.Thread(name=HELD, target=lambda: answers.__setitem__(
        "withdrawal", app.test_client().delete(f"/api/v1/records/{subject_id}",
                                               headers=headers)))
    try:
        withdrawal.start()
        # the withdrawal has erased the row and waits to commit (a fixed sleep was not enough
        # on a loaded machine: the resend then came first and rightly answered `unchanged`)
        assert held.entered.wait(timeout=10)
        _, body = without_subject(record)
        resend = threading.Thread(target=lambda: answers.__setitem__("resend", (
            app.test_client().post("/api/v1/records/batch", json=batch, headers=headers)
            if send == "batch" else
            app.test_client().put(f"/api/v1/records/{subject_id}", json=body,
                                  headers=headers))))
        watch = LockWatch(app, url)
        resend.start()
        deadline = time.monotonic() + 10
        while resend.is_alive() and not watch.waiting() and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        held.release.set()
        withdrawal.join()
        held.close()
    resend.join()
    watch.close()  # not before: the resend may still be inside the engine's listeners
    assert answers["withdrawal"].status_code == 204
    return answers["resend"]


def test_a_batch_racing_a_withdrawal_never_answers_unchanged(live_app):
    app, headers, url = live_app
    outcomes = []
    for number in range(RACES):
        answer = _race(app, headers, url, f"TOR-batchrace-{number:03d}", "batch")
        assert answer.status_code == 200
        [result] = answer.json["results"]
        outcomes.append(result["outcome"])
        assert result["outcome"] == "rejected", result
        assert result["errors"][0]["code"] == "subject_withdrawn"
    assert outcomes.count("unchanged") == 0


def test_a_put_racing_a_withdrawal_never_answers_unchanged(live_app):
    app, headers, url = live_app
    for number in range(10):
        answer = _race(app, headers, url, f"TOR-putrace-{number:03d}", "put")
        assert answer.status_code == 409 and answer.json["code"] == "subject_withdrawn"
