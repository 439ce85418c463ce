"""Releases (privacy.md 2.1, api.md Releases): cutting, listing, the k-changes and time rules,
answers computed from a chosen release, and withdrawal erasing a patient from every release."""

from __future__ import annotations

import random
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from registry.db import unit_of_work
from registry.models import Record, release_columns, release_records
from registry.services.window import release_columns as release_columns_service
from registry.services.intake.records import withdraw_record
from registry.services.window.release_columns import coded_names
from registry.services.access.tokens import resolve_token
from registry.services.intake.synthetic import synthetic_record
from tests.test_aggregates_api import K, insert_rows

RELEASES = "/api/v1/releases"
COUNTS = "/api/v1/aggregates/counts?rows=presentation"


def change_records(count: int) -> None:
    """Give `count` stored records a new version, as an update by their site would."""
    with unit_of_work() as session:
        ids = session.scalars(select(Record.id).order_by(Record.id).limit(count)).all()
        session.execute(update(Record).where(Record.id.in_(ids))
                        .values(version=Record.version + 1, vital_status="dead",
                                cause_of_death="other"))


def states() -> int:
    """Rows of the release storage."""
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(release_records))


def put(client: FlaskClient, headers: dict[str, str], rng: random.Random, number: int,
        **fields: Any) -> str:
    """Create one record through the API; returns its subject id."""
    record = {**synthetic_record(rng, "TOR"), **fields}
    subject = f"TOR-rel-{'abcdefghijklmnopqrstuvwxyz'[number % 26]}{number // 26:02d}"
    record.pop("subject_id")
    assert client.put(f"/api/v1/records/{subject}", json=record,
                      headers=headers).status_code == 201
    return subject


def test_before_any_release_aggregates_answer_409_saying_how_to_cut_one(
        client: FlaskClient, coordinator) -> None:
    insert_rows(40, seed=1, release=False)
    for path in (COUNTS, "/api/v1/aggregates/remission", "/api/v1/analyses/survival",
                 "/api/v1/analyses/hazard-ratios?covariates=hr_status"):
        response = client.get(path, headers=coordinator)
        assert response.status_code == 409 and response.json["code"] == "no_release"
        assert "registry releases cut" in response.json["detail"]
        assert "POST /api/v1/releases" in response.json["detail"]


def test_stewards_cut_and_everyone_at_the_window_lists(client: FlaskClient, coordinator, steward,
                                                       site_a) -> None:
    insert_rows(40, seed=2, release=False)
    assert client.post(RELEASES, json={}, headers=coordinator).status_code == 403
    assert client.get(RELEASES, headers=site_a).status_code == 403
    cut = client.post(RELEASES, json={"note": "first look"}, headers=steward)
    assert cut.status_code == 201
    assert cut.json["record_count"] == 40 and cut.json["changes"] == 40
    listed = client.get(RELEASES, headers=coordinator).json["releases"]
    assert [(r["id"], r["note"]) for r in listed] == [(cut.json["id"], "first look")]
    table = client.get(COUNTS, headers=coordinator).json
    assert table["disclosure"]["release"] == cut.json["id"]
    # A coordinator sees the record count as the table's total (the same records, the same
    # protected number), and no exact count of changes.
    assert listed[0]["record_count"] == table["total"] and listed[0]["changes"] is None
    exact = client.get(RELEASES, headers=steward).json["releases"][0]
    assert exact["record_count"] == 40 and exact["changes"] == 40
    bad = client.post(RELEASES, json={"note": "two\nlines"}, headers=steward)
    assert bad.status_code == 422


def test_a_release_needs_k_changes_since_the_previous_one(client: FlaskClient,
                                                          steward) -> None:
    insert_rows(60, seed=3)
    refused = client.post(RELEASES, json={}, headers=steward)
    assert refused.status_code == 409 and refused.json["code"] == "too_few_changes"
    assert f"needs at least {K}" in refused.json["detail"]
    change_records(K - 1)
    refused = client.post(RELEASES, json={}, headers=steward)
    assert refused.status_code == 409 and f"{K - 1} records were created, changed or " \
        "withdrawn" in refused.json["detail"]
    change_records(K)  # the same K - 1 and one more
    assert client.post(RELEASES, json={}, headers=steward).json["changes"] == K


def test_the_first_release_needs_k_records(client: FlaskClient, steward) -> None:
    insert_rows(K - 1, seed=4, release=False)
    assert client.post(RELEASES, json={}, headers=steward).status_code == 409
    insert_rows(1, seed=5)  # cuts


def test_releases_come_at_most_once_per_release_min_days(app: Flask, client: FlaskClient,
                                                         steward, monkeypatch) -> None:
    insert_rows(60, seed=6)
    change_records(30)
    monkeypatch.setitem(app.config, "REGISTRY_RELEASE_MIN_DAYS", 30)
    refused = client.post(RELEASES, json={}, headers=steward)
    assert refused.status_code == 409 and refused.json["code"] == "release_too_soon"
    assert "at most one per 30 days" in refused.json["detail"]
    assert "in 30 days" in refused.json["detail"]


def test_withdrawals_count_as_changes(client: FlaskClient, steward, site_a) -> None:
    rng = random.Random(7)
    subjects = [put(client, site_a, rng, n) for n in range(2 * K)]
    first = client.post(RELEASES, json={}, headers=steward).json
    for subject in subjects[:K]:
        assert client.delete(f"/api/v1/records/{subject}", headers=site_a).status_code == 204
    second = client.post(RELEASES, json={}, headers=steward)
    assert second.status_code == 201 and second.json["changes"] == K
    assert second.json["record_count"] == K
    # The withdrawn patients are erased from the first release too.
    listed = {r["id"]: r for r in client.get(RELEASES, headers=steward).json["releases"]}
    assert listed[first["id"]]["record_count"] == K


def test_an_older_release_answers_as_it_did_after_later_changes_and_releases(
        client: FlaskClient, coordinator, steward) -> None:
    insert_rows(120, seed=8)
    path = "/api/v1/aggregates/counts?rows=vital_status&columns=presentation"
    first = client.get(path, headers=coordinator)
    release = first.json["disclosure"]["release"]
    change_records(40)  # 40 deaths
    second = client.post(RELEASES, json={}, headers=steward).json["id"]
    assert client.get(f"{path}&release={release}", headers=coordinator).data == first.data
    newer = client.get(path, headers=coordinator).json
    assert newer["disclosure"]["release"] == second
    assert newer["cells"] != first.json["cells"]
    unknown = client.get(f"{path}&release={second + 1}", headers=coordinator)
    assert unknown.status_code == 400 and unknown.json["errors"][0]["field"] == "release"


def test_a_release_stores_only_what_changed(client: FlaskClient, steward) -> None:
    insert_rows(300, seed=9)
    assert states() == 300
    change_records(K)
    client.post(RELEASES, json={}, headers=steward)
    assert states() == 300 + K  # not 600: unchanged records are shared by both releases


def copy_lengths(release_id: int) -> set[int]:
    """The number of records in each stored column of a release's columnar copy."""
    with unit_of_work() as session:
        rows = session.execute(select(release_columns.c.name, release_columns.c.data).where(
            release_columns.c.release_id == release_id)).all()
    return {len(data) // (1 if name in coded_names() else 4) for name, data in rows}


def test_a_cut_writes_the_release_copy_and_a_withdrawal_meanwhile_leaves_none(
        client: FlaskClient, steward, site_a, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    subjects = [put(client, site_a, rng, n) for n in range(2 * K)]
    first = client.post(RELEASES, json={}, headers=steward).json["id"]
    assert copy_lengths(first) == {2 * K}  # after the cut's commit, every column

    # A patient withdraws while the copy of the next release is being built: the copy read
    # before the withdrawal must not be written (it would hold the withdrawn patient).
    for n in range(2 * K, 3 * K):
        put(client, site_a, rng, n)
    build = release_columns_service.build

    def build_then_withdraw(session: Any, release_id: int) -> Any:
        columns = build(session, release_id)
        withdraw_record(resolve_token(site_a["Authorization"].split()[1]), subjects[0])
        return columns

    monkeypatch.setattr(release_columns_service, "build", build_then_withdraw)
    second = client.post(RELEASES, json={}, headers=steward).json["id"]
    monkeypatch.undo()
    assert copy_lengths(second) == set()  # left to the next question, which builds it anew
    assert copy_lengths(first) == set()  # the withdrawal deleted the first release's copy


def test_withdrawal_erases_the_patient_from_every_release(
        client: FlaskClient, coordinator, steward, site_a) -> None:
    rng = random.Random(10)
    subjects = [put(client, site_a, rng, n, vital_status="alive", cause_of_death=None)
                for n in range(3 * K)]
    client.post(RELEASES, json={}, headers=steward)
    for subject in subjects[K:2 * K]:
        record = client.get(f"/api/v1/records/{subject}", headers=site_a).json
        body = {name: value for name, value in record.items()
                if name not in ("subject_id", "derived", "version", "created_at",
                                "updated_at")}
        body["last_followup_day"] += 30
        assert client.put(f"/api/v1/records/{subject}", json=body,
                          headers=site_a).status_code == 200
    client.post(RELEASES, json={}, headers=steward)
    assert states() == 4 * K
    target = subjects[K]  # in both releases, in two states
    assert client.delete(f"/api/v1/records/{target}", headers=site_a).status_code == 204
    assert states() == 4 * K - 2
    counts = [r["record_count"] for r in client.get(RELEASES, headers=steward).json["releases"]]
    assert counts == [3 * K - 1, 3 * K - 1]


def test_the_command_line_cuts_and_lists(app: Flask) -> None:
    insert_rows(30, seed=11, release=False)
    runner = app.test_cli_runner()
    cut = runner.invoke(args=["releases", "cut", "--note", "for the steering committee"])
    assert cut.exit_code == 0, cut.output
    release_id = cut.output.rstrip("\n").split("\n")[-1]
    assert release_id.isdigit()
    listed = runner.invoke(args=["releases", "list"])
    assert f"{release_id}\t" in listed.output and "for the steering committee" in listed.output
    again = runner.invoke(args=["releases", "cut"])
    assert again.exit_code != 0 and "needs at least" in again.output


@pytest.mark.parametrize("setting", ["REGISTRY_QUESTION_BUDGET", "REGISTRY_RELEASE_MIN_DAYS"])
def test_the_new_settings_are_documented(setting: str) -> None:
    from registry.config import settings_table

    assert setting in settings_table()


def test_a_record_keeps_its_key_for_life(client: FlaskClient, steward, site_a) -> None:
    rng = random.Random(12)
    subjects = [put(client, site_a, rng, n) for n in range(K)]
    client.post(RELEASES, json={}, headers=steward)
    for subject in subjects:
        record = client.get(f"/api/v1/records/{subject}", headers=site_a).json
        body = {name: value for name, value in record.items()
                if name not in ("subject_id", "derived", "version", "created_at",
                                "updated_at")}
        body["last_followup_day"] += 30
        client.put(f"/api/v1/records/{subject}", json=body, headers=site_a)
    client.post(RELEASES, json={}, headers=steward)
    with unit_of_work() as session:
        keys = session.execute(select(Record.cell_key, release_records.c.record_key,
                                      release_records.c.version)
                               .join(release_records, release_records.c.record_id == Record.id)
                               ).all()
    assert len(keys) == 2 * K and {version for _, _, version in keys} == {1, 2}
    assert all(kept == drawn for drawn, kept, _ in keys)


def test_an_answered_question_is_answered_again_without_counting(
        client: FlaskClient, coordinator, make_token) -> None:
    insert_rows(100, seed=13)
    path = "/api/v1/aggregates/counts?rows=hr_status&columns=presentation"
    first = client.get(path, headers=coordinator)
    with unit_of_work() as session:  # were anything counted again, it would now count nothing
        session.execute(release_records.delete())
    assert client.get(path, headers=coordinator).data == first.data
    assert client.get(path, headers=make_token("coordinator")).data == first.data
