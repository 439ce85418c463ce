"""Concurrency on PostgreSQL: many writers on overlapping subjects lose no update.

8 writers x 500 PUTs over 200 subjects, then a batch writer racing single PUTs, each through the
real app on a database of its own (no rolled-back transaction: every write commits). Each write
carries a unique last_followup_day, so the stored state names the write that made it.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from conftest import EXAMPLE_RECORD, get_database_of, migrate, without_subject
from live import needs_postgres, own_database
from registry import create_app
from registry.db import unit_of_work
from registry.models import AuditEntry
from registry.services.access.tokens import add_site, issue_token

pytestmark = [pytest.mark.postgres_only, needs_postgres]

_, BODY = without_subject(EXAMPLE_RECORD)
SUBJECTS = [f"TOR-race-{n:04d}" for n in range(200)]
FIRST_DAY = 3000  # later than every other day of the example record


@pytest.fixture(scope="module")
def race_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, dict]]:
    """The real app on a migrated database of its own, and a submitter's headers."""
    with own_database("race", tmp_path_factory.mktemp("race")) as url:
        migrate(url)
        app = create_app({"DATABASE_URL": url, "REGISTRY_RATE_LIMIT": "off",
                          "REGISTRY_DB_POOL_SIZE": 10})
        with app.app_context():
            add_site("TOR", "Toronto")
            headers = {"Authorization": "Bearer " + issue_token("submitter", "TOR")[1]}
        yield app, headers
        get_database_of(app).engine.dispose()


class Ledger:
    """The acknowledged writes: subject -> [(version, last_followup_day)], and every status."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acknowledged: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.statuses: dict[int, int] = defaultdict(int)
        self.day = FIRST_DAY

    def next_day(self) -> int:
        """A last_followup_day no other write uses."""
        with self.lock:
            self.day += 1
            return self.day

    def note(self, status: int, writes: list[tuple[str, int, int]] = ()) -> None:
        """Record a response and the writes it acknowledged (subject, version, day)."""
        with self.lock:
            self.statuses[status] += 1
            for subject, version, day in writes:
                self.acknowledged[subject].append((version, day))


def _put_writer(app: Flask, headers: dict, ledger: Ledger, seed: int, count: int,
                subjects: list[str]) -> None:
    client = app.test_client()
    rng = random.Random(seed)
    for _ in range(count):
        subject, day = rng.choice(subjects), ledger.next_day()
        answer = client.put(f"/api/v1/records/{subject}", json={**BODY, "last_followup_day": day},
                            headers=headers)
        acknowledged = [(subject, answer.json["version"], day)] if answer.status_code in (
            200, 201) else []
        ledger.note(answer.status_code, acknowledged)


def _batch_writer(app: Flask, headers: dict, ledger: Ledger, seed: int, batches: int,
                  subjects: list[str]) -> None:
    client = app.test_client()
    rng = random.Random(seed)
    for _ in range(batches):
        chosen = rng.sample(subjects, 50)
        days = {subject: ledger.next_day() for subject in chosen}
        answer = client.post("/api/v1/records/batch", headers=headers, json={"records": [
            {**EXAMPLE_RECORD, "subject_id": subject, "last_followup_day": days[subject]}
            for subject in chosen]})
        writes = []
        if answer.status_code == 200:
            assert answer.json["summary"]["rejected"] == 0, answer.json
            writes = [(line["subject_id"], line["version"], days[line["subject_id"]])
                      for line in answer.json["results"]]
        ledger.note(answer.status_code, writes)


def _run(workers: list[threading.Thread]) -> None:
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _assert_no_lost_update(app: Flask, headers: dict, ledger: Ledger,
                           subjects: list[str]) -> None:
    assert set(ledger.statuses) <= {200, 201}, dict(ledger.statuses)
    client = app.test_client()
    with app.app_context(), unit_of_work() as session:
        audits = dict(session.execute(
            select(AuditEntry.subject_id, func.count()).where(AuditEntry.subject_id.in_(subjects))
            .group_by(AuditEntry.subject_id)).all())
    for subject in subjects:
        writes = sorted(ledger.acknowledged.get(subject, []))
        if not writes:
            continue
        versions = [version for version, _ in writes]
        assert versions == list(range(1, len(writes) + 1)), (subject, versions)
        stored = client.get(f"/api/v1/records/{subject}", headers=headers).json
        assert stored["version"] == len(writes)
        assert stored["last_followup_day"] == writes[-1][1], subject  # the last acknowledged
        history = client.get(f"/api/v1/records/{subject}/history", headers=headers).json
        assert [v["version"] for v in history["versions"]] == versions
        assert audits[subject] == len(writes)


def test_eight_writers_on_overlapping_subjects_lose_no_update(race_app):
    app, headers = race_app
    ledger = Ledger()
    subjects = SUBJECTS
    _run([threading.Thread(target=_put_writer, args=(app, headers, ledger, seed, 500, subjects))
          for seed in range(8)])
    assert sum(ledger.statuses.values()) == 8 * 500
    _assert_no_lost_update(app, headers, ledger, subjects)


def test_a_batch_racing_single_puts_loses_no_update(race_app):
    app, headers = race_app
    ledger = Ledger()
    subjects = [subject.replace("race", "mixed") for subject in SUBJECTS[:100]]
    workers = [threading.Thread(target=_put_writer, args=(app, headers, ledger, seed, 150,
                                                          subjects)) for seed in range(4)]
    workers += [threading.Thread(target=_batch_writer, args=(app, headers, ledger, 99, 12,
                                                             subjects))]
    _run(workers)
    assert sum(ledger.statuses.values()) == 4 * 150 + 12
    _assert_no_lost_update(app, headers, ledger, subjects)


def test_writes_of_the_races_are_all_accounted_for(race_app):
    """Sanity of the ledger itself: the database holds one audit entry per acknowledged write."""
    app, _ = race_app
    with app.app_context(), unit_of_work() as session:
        total: Any = session.scalar(select(func.count()).select_from(AuditEntry))
    assert total == 8 * 500 + 4 * 150 + 12 * 50
