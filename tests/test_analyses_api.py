"""The analyses (survival, hazard ratios) against lifelines and textbook formulas on generated
cohorts with known truth, their refusals, CSV, and privacy.md section 2 on their answers."""

from __future__ import annotations

import csv
import io
import math
import random
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask import Flask, current_app
from flask.testing import FlaskClient
from lifelines import CoxPHFitter
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import survival_table_from_events
from scipy.optimize import linprog
from sqlalchemy import delete, func, insert, select, update

from registry import models
from registry.db import unit_of_work
from registry.models import QueryLogEntry, Record, Site
from registry.services.window import release_columns
from registry.services.window.disclosure import MAX_ADJUSTMENT, Policy
from registry.services.window.release_memo import ReleaseMemo
from registry.services.window.releases import cut_release, resolve_release
from registry.services.intake.synthetic import synthetic_rows

API = "/api/v1/analyses"
K = 11
MIN_REMISSION = 730
YEARS = 10


def year_start(year: int) -> int:
    """Day on which yearly interval `year` begins (written here independently)."""
    return math.floor(365.25 * year)


def generated_cohort(count: int, seed: int, stop_hazard_ratio: float = 1.0,
                     stop_share: float = 0.5) -> list[dict[str, Any]]:
    """Records with known truth: relapse with hazard h from remission start, h * ratio after a
    stop; follow-up uniform; only records the inclusion rule admits (>= 730 days). Then cut a
    release of them."""
    rng = random.Random(seed)
    with unit_of_work() as session:
        for code in ("TOR", "MTL", "VAN"):
            if session.scalar(select(Site.id).where(Site.code == code)) is None:
                session.add(Site(code=code, name=f"{code} centre"))
        session.flush()
        sites = {i: c for i, c in session.execute(select(Site.id, Site.code))}
    rows: list[dict[str, Any]] = []
    hazard = 1 / 3000
    for row in synthetic_rows(rng, sites, count * 2):
        start = row["remission_start_day"]
        stops = rng.random() < stop_share
        stop = rng.randint(200, 1800) if stops else None
        first = rng.expovariate(hazard)
        relapse = first if stop is None or first < stop else (
            stop + rng.expovariate(hazard * stop_hazard_ratio))
        follow = rng.randint(MIN_REMISSION, 6000)
        if stop is not None and stop >= follow:
            continue
        end = min(int(relapse), follow)
        if end < MIN_REMISSION:
            continue  # not eligible: never enters the registry
        progressed = relapse <= follow
        row.update(progression_day=start + end if progressed else None,
                   last_followup_day=start + (end if progressed else follow),
                   disease_status_last="progressing" if progressed else "ned",
                   vital_status="dead" if rng.random() < 0.05 else "alive",
                   cause_of_death=None, trastuzumab_resume_day=None,
                   maintenance_status="discontinued" if stop is not None else "ongoing",
                   trastuzumab_stop_day=None if stop is None else start + stop,
                   discontinuation_reason=None if stop is None else "patient_preference")
        if row["vital_status"] == "dead":
            row["cause_of_death"] = "other"
        rows.append(row)
        if len(rows) == count:
            break
    with unit_of_work() as session:
        session.execute(insert(Record), rows)
    cut_release(None, None, Policy.from_config(current_app.config))  # analyses read a release
    return rows


def design(rows: list[dict[str, Any]], origin: str, landmark_years: int = 0,
           outcome: str = "relapse") -> pd.DataFrame:
    """Entry, exit and outcome of each record in an origin's cohort (days), independently of
    the registry's SQL."""
    out = []
    for r in rows:
        start, stop, progression = (r["remission_start_day"], r["trastuzumab_stop_day"],
                                    r["progression_day"])
        end = progression if progression is not None else r["last_followup_day"]
        event = progression is not None or (outcome == "relapse_or_death"
                                             and r["vital_status"] == "dead")
        eligible = start + MIN_REMISSION
        group = None
        if origin == "remission_start":
            zero = start
        elif origin == "trastuzumab_stop":
            if r["maintenance_status"] != "discontinued" or (
                    progression is not None and progression <= stop):
                continue
            zero = stop
        else:
            zero = start + year_start(landmark_years)
            if end <= zero:
                continue
            group = "stopped" if stop is not None and stop <= zero else "continuing"
        out.append({"entry": max(0, eligible - zero), "exit": end - zero, "event": event,
                    "group": group, "presentation": r["presentation"],
                    "hr_status": r["hr_status"], "visceral": r["visceral_disease"]})
    return pd.DataFrame(out)


def expected_intervals(frame: pd.DataFrame) -> list[dict[str, int]]:
    """The published interval counts, from lifelines' survival table with the same entries:
    at risk at each interval's first day, entered after it (through the next first day),
    events and censored within it; the last interval is open."""
    table = survival_table_from_events(frame["exit"], frame["event"],
                                       birth_times=frame["entry"])
    times = table.index.to_numpy()
    rows = []
    for year in range(YEARS + 1):
        begin = year_start(year)
        end = year_start(year + 1) if year < YEARS else np.inf
        inside = (times >= begin) & (times < end)
        rows.append({
            "at_risk": int(table["entrance"][times <= begin].sum()
                           - table["removed"][times < begin].sum()),
            "entered": int(table["entrance"][(times > begin) & (times <= end)].sum()),
            "events": int(table["observed"][inside].sum()),
            "censored": int(table["censored"][inside].sum()),
        })
    return rows


def textbook(intervals: list[dict[str, Any]]) -> list[tuple[float, float, float] | None]:
    """Actuarial estimate and Greenwood log-log 95 % interval, from published counts."""
    out: list[tuple[float, float, float] | None] = []
    s, total, started = 1.0, 0.0, False
    for i in intervals[:YEARS]:
        if not started and i["at_risk"] == 0:
            out.append(None)
            continue
        started = True
        if None in (i["at_risk"], i["entered"], i["events"], i["censored"]):
            break
        n = i["at_risk"] + i["entered"] / 2 - i["censored"] / 2
        s *= 1 - i["events"] / n
        total += i["events"] / (n * (n - i["events"]))
        if total == 0:
            out.append((s, s, s))
            continue
        spread = 1.959964 * math.sqrt(total) / abs(math.log(s))
        out.append((s, s ** math.exp(spread), s ** math.exp(-spread)))
    return out


@pytest.fixture()
def no_noise(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Perturbation off, and no repeat limit."""
    monkeypatch.setitem(app.config, "REGISTRY_PERTURBATION", "off")
    monkeypatch.setitem(app.config, "REGISTRY_QUERY_LIMIT", 10_000)


@pytest.mark.parametrize("query, origin, landmark", [
    ("", "remission_start", 0),
    ("origin=trastuzumab_stop", "trastuzumab_stop", 0),
    ("origin=landmark&landmark_years=1", "landmark", 1),
    ("origin=landmark&landmark_years=3", "landmark", 3),
    ("origin=trastuzumab_stop&outcome=relapse_or_death", "trastuzumab_stop", 0),
])
def test_interval_counts_and_estimates_equal_lifelines_and_the_textbook(
        client: FlaskClient, coordinator, no_noise, query, origin, landmark) -> None:
    rows = generated_cohort(1500, seed=5)
    body = client.get(f"{API}/survival?{query}", headers=coordinator).json
    outcome = "relapse_or_death" if "relapse_or_death" in query else "relapse"
    assert body["outcome"] == outcome
    assert ("death without relapse is censored" in body["outcome_meaning"]) == (
        outcome == "relapse")
    frame = design(rows, origin, landmark, outcome)
    groups = {"all": frame} if origin != "landmark" else dict(tuple(frame.groupby("group")))
    published = 0
    for group in body["groups"]:
        expected = expected_intervals(groups[group["group"]])
        assert group["count"] == len(groups[group["group"]])
        assert len(group["intervals"]) == YEARS + 1  # fixed, whatever the data
        for shown, truth in zip(group["intervals"], expected):
            for name, value in truth.items():
                assert shown[name] in (value, None), (group["group"], shown, truth)
                published += shown[name] is not None
        for shown, estimate in zip(group["intervals"], textbook(group["intervals"])):
            if estimate is None:
                assert shown["survival"] is None
            elif shown["survival"] is not None:
                assert (shown["survival"], shown["lower"], shown["upper"]) == pytest.approx(
                    estimate, abs=0.0006)
    assert published > 30


def test_no_answer_shows_a_year_of_remission_guaranteed_by_the_inclusion_rule(
        client: FlaskClient, coordinator, no_noise) -> None:
    generated_cohort(600, seed=6)
    body = client.get(f"{API}/survival?by=presentation", headers=coordinator).json
    assert "730" in body["entry_day"]
    for group in body["groups"]:
        first, second, third = group["intervals"][:3]
        # Years 0 and 1: nobody can be at risk (the inclusion rule), so no estimate at all.
        assert (first["at_risk"], first["events"], first["survival"]) == (0, 0, None)
        assert (second["at_risk"], second["events"], second["survival"]) == (0, 0, None)
        assert second["entered"] == group["count"]  # everyone enters on day 730
        assert third["at_risk"] == group["count"]
        assert third["survival"] is not None or third.get("suppressed")
    landmark = client.get(f"{API}/survival?origin=landmark&landmark_years=1",
                          headers=coordinator).json
    for group in landmark["groups"]:  # landmark at 1 year: at risk from remission day 730
        assert group["intervals"][0]["at_risk"] == 0
        assert group["intervals"][0]["survival"] is None


def test_logrank_equals_lifelines(client: FlaskClient, coordinator, no_noise) -> None:
    rows = generated_cohort(1500, seed=7)
    body = client.get(f"{API}/survival?by=presentation", headers=coordinator).json
    frame = design(rows, "remission_start")
    # Everyone enters on day 730, before any exit: lifelines' test without entry is the same.
    truth = multivariate_logrank_test(frame["exit"], frame["presentation"], frame["event"])
    test = body["logrank"]
    assert test["refused"] is False and test["degrees_of_freedom"] == 1
    assert test["chi_square"] == round(truth.test_statistic, 1)
    assert test["p_value"] == float(f"{truth.p_value:.2g}")


def test_logrank_with_delayed_entry_equals_a_direct_count_of_the_risk_sets() -> None:
    from registry.services.analysis.estimators import logrank

    rng = np.random.default_rng(4)
    size = 400
    group = rng.integers(0, 3, size)
    entry = rng.integers(0, 300, size)
    exit = entry + rng.integers(0, 900, size)
    event = rng.random(size) < 0.5
    observed, expected = np.zeros(3), np.zeros(3)
    variance = np.zeros((3, 3))
    for t in np.unique(exit[event]):
        at_risk = np.array([((entry <= t) & (exit >= t) & (group == g)).sum()
                            for g in range(3)], dtype=float)
        deaths = np.array([((exit == t) & event & (group == g)).sum() for g in range(3)])
        n, d = at_risk.sum(), deaths.sum()
        observed += deaths
        expected += d * at_risk / n
        if n > 1:
            share = at_risk / n
            variance += d * (n - d) / (n - 1) * (np.diag(share) - np.outer(share, share))
    difference = (observed - expected)[:2]
    statistic = difference @ np.linalg.inv(variance[:2, :2]) @ difference
    test = logrank(group, entry, exit, event, np.ones(size))
    assert test.statistic == pytest.approx(statistic, rel=1e-9)
    assert test.degrees_of_freedom == 2


def test_median_is_reported_where_the_estimate_crosses_one_half(
        client: FlaskClient, coordinator, no_noise) -> None:
    generated_cohort(1500, seed=8)
    body = client.get(f"{API}/survival?years=20", headers=coordinator).json
    group = body["groups"][0]
    median = group["median"]
    curve = [i["survival"] for i in group["intervals"]]
    assert median is not None, curve
    year = int(median["years"])
    before = 1.0 if year == 2 else curve[year - 1]
    assert before > 0.5 >= curve[year]
    assert median["years"] == pytest.approx(year + (before - 0.5) / (before - curve[year]),
                                            abs=0.006)
    assert median["lower"] <= median["years"] <= (median["upper"] or math.inf)


def cox_truth(frame: pd.DataFrame, columns: dict[str, str], delayed: bool) -> pd.DataFrame:
    """lifelines' Cox fit on in-memory arrays, with the registry's conventions: at risk from the
    start of the entry day; the reference level is the first catalogue category."""
    data = pd.DataFrame({"exit": frame["exit"].astype(float),
                         "event": frame["event"].astype(int)})
    for name, column in columns.items():
        data[name] = column
    if delayed:
        data["entry"] = frame["entry"] - 0.5
        return CoxPHFitter().fit(data, "exit", "event", entry_col="entry").summary
    data["exit"] = data["exit"] - frame["entry"] + 0.5
    return CoxPHFitter().fit(data, "exit", "event").summary


@pytest.mark.parametrize("origin", ["remission_start", "trastuzumab_stop"])
def test_hazard_ratios_equal_lifelines(client: FlaskClient, coordinator, no_noise,
                                       origin) -> None:
    rows = generated_cohort(1500, seed=9)
    body = client.get(f"{API}/hazard-ratios?origin={origin}&covariates=presentation,"
                      "visceral_disease", headers=coordinator).json
    frame = design(rows, origin)
    summary = cox_truth(frame, {
        "presentation=recurrent": (frame["presentation"] == "recurrent").astype(float),
        "visceral_disease=false": (~frame["visceral"].astype(bool)).astype(float)},
        delayed=origin == "trastuzumab_stop")
    levels = {(r["covariate"], r["level"]): r for r in body["levels"]}
    assert levels[("presentation", "de_novo")]["reference"] is True
    assert levels[("visceral_disease", "true")]["hazard_ratio"] == 1.0
    for name, (covariate, level) in {"presentation=recurrent": ("presentation", "recurrent"),
                                     "visceral_disease=false": ("visceral_disease", "false")
                                     }.items():
        row = levels[(covariate, level)]
        assert row["hazard_ratio"] == round(summary.loc[name, "exp(coef)"], 2)
        assert row["lower"] == round(summary.loc[name, "exp(coef) lower 95%"], 2)
        assert row["upper"] == round(summary.loc[name, "exp(coef) upper 95%"], 2)
        assert row["p_value"] == float(f"{summary.loc[name, 'p']:.2g}")
        chosen = frame["presentation"] == level if covariate == "presentation" else (
            frame["visceral"].astype(str).str.lower() == level)
        assert row["records"] == int(chosen.sum())
        assert row["events"] == int(frame.loc[chosen, "event"].sum())
    assert body["records"] == len(frame) and body["events"] == int(frame["event"].sum())
    assert {c["covariate"] for c in body["proportional_hazards"]} == {"presentation",
                                                                       "visceral_disease"}


def test_contributing_sites_count_the_sites_of_the_analysed_cohort(
        client: FlaskClient, coordinator) -> None:
    """Each analysis finds its sites in the scan that counts it (on the intervals, on exact
    days, in the model's rows): three sites are published, and a cohort filtered to two of
    them publishes none (two would point at the centres)."""
    generated_cohort(1500, seed=12)
    with unit_of_work() as session:
        tor = session.scalar(select(Site.id).where(Site.code == "TOR"))
        session.execute(update(Record).where(Record.site_id == tor).values(
            presentation="de_novo", version=Record.version + 1))
    cut_release(None, None, Policy.from_config(current_app.config))
    questions = ("survival?origin=trastuzumab_stop", "survival?by=visceral_disease",
                 "hazard-ratios?covariates=visceral_disease")
    for question in questions:
        everyone = client.get(f"{API}/{question}", headers=coordinator)
        assert everyone.status_code == 200, everyone.json
        assert everyone.json["disclosure"]["contributing_sites"] == 3
        two_sites = client.get(f"{API}/{question}&presentation=recurrent", headers=coordinator)
        assert two_sites.status_code == 200, two_sites.json
        assert two_sites.json["disclosure"]["contributing_sites"] is None


def test_a_question_reads_the_columns_of_its_release_once_and_sees_withdrawals(
        client: FlaskClient, coordinator, site_a, no_noise,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A question reads the columns it needs from the release's columnar copy, written when the
    release was cut, in one statement, and keeps them in the process: the next question on the
    release reads nothing from the database and answers as a fresh read would. A withdrawal
    deletes the copy and changes the release, so the next question writes the copy again,
    without the patient."""
    rows = generated_cohort(600, seed=21)
    reads, builds = [], []
    stored, rebuild = release_columns._stored, release_columns._rebuild
    monkeypatch.setattr(release_columns, "_stored",
                        lambda *a, **k: reads.append(a[2]) or stored(*a, **k))
    monkeypatch.setattr(release_columns, "_rebuild",
                        lambda *a, **k: builds.append(1) or rebuild(*a, **k))
    release_columns.COLUMNS.clear()
    first = client.get(f"{API}/survival?by=presentation", headers=coordinator).json
    again = client.get(f"{API}/survival?by=presentation&years=12", headers=coordinator).json
    assert len(reads) == 1 and "presentation" in reads[0] and "her2_ihc" not in reads[0]
    assert again["logrank"] == first["logrank"]
    with unit_of_work() as session:  # the same question never asked, on a fresh read
        session.execute(delete(QueryLogEntry))
    release_columns.COLUMNS.clear()
    assert client.get(f"{API}/survival?by=presentation&years=12",
                      headers=coordinator).json == again
    assert len(reads) == 2 and not builds
    with unit_of_work() as session:
        tor = session.scalar(select(Site.id).where(Site.code == "TOR"))
        release = resolve_release(session, None).id
    withdrawn = next(r for r in rows if r["site_id"] == tor)
    assert client.delete(f"/api/v1/records/{withdrawn['subject_id']}",
                         headers=site_a).status_code == 204
    with unit_of_work() as session:
        assert not session.scalar(select(func.count()).select_from(
            models.release_columns).where(models.release_columns.c.release_id == release))
    after = client.get(f"{API}/survival?by=presentation&years=14", headers=coordinator).json
    assert len(builds) == 1
    with unit_of_work() as session:  # written again for the next question and process
        assert session.scalar(select(func.count()).select_from(
            models.release_columns).where(models.release_columns.c.release_id == release))
    # What was kept of the release before the withdrawal is dropped, not left until evicted.
    assert len({identity for identity, _ in release_columns.COLUMNS._values}) == 1
    counts = {g["group"]: g["count"] for g in first["groups"]}
    counts[withdrawn["presentation"]] -= 1
    assert {g["group"]: g["count"] for g in after["groups"]} == counts


def test_a_copy_written_at_the_same_time_by_another_question_does_not_fail_the_answer(
        client: FlaskClient, coordinator, no_noise, monkeypatch: pytest.MonkeyPatch) -> None:
    """A question on a release without a columnar copy writes it; when another question wrote
    it first (here: the same rows inserted twice), the insert fails in its savepoint and the
    answer uses what it built."""
    generated_cohort(300, seed=23)
    expected = client.get(f"{API}/survival?by=presentation", headers=coordinator).json
    with unit_of_work() as session:
        session.execute(delete(QueryLogEntry))
        session.execute(delete(models.release_columns))
    release_columns.COLUMNS.clear()
    store = release_columns.store

    def twice(*args: Any) -> None:
        store(*args)
        store(*args)

    monkeypatch.setattr(release_columns, "store", twice)
    assert client.get(f"{API}/survival?by=presentation",
                      headers=coordinator).json == expected


def test_the_tallies_kept_are_bounded_by_their_size(app: Flask) -> None:
    generated_cohort(30, seed=22)
    memo = ReleaseMemo(max_size=5)
    computed = []

    def get(key: str, size: int) -> str:
        def compute() -> str:
            computed.append(key)
            return key
        with unit_of_work() as session:
            release = resolve_release(session, None)
            kept = memo.peek(session, release, key)
            if kept is None:
                kept = compute()
                memo.keep(session, release, key, kept, size)
            return kept

    for key, size in (("a", 2), ("b", 2), ("a", 2), ("c", 2), ("big", 6), ("big", 6)):
        assert get(key, size) == key
    assert computed == ["a", "b", "c", "big", "big"]  # "b" was the oldest use, "big" too big
    assert get("a", 2) == "a" and get("b", 2) == "b"
    assert computed[-1] == "b"


@pytest.mark.parametrize("ratio, harmful", [(2.5, True), (1.0, False)])
def test_the_landmark_analysis_recovers_the_effect_of_stopping(
        client: FlaskClient, coordinator, no_noise, ratio, harmful) -> None:
    generated_cohort(2500, seed=10, stop_hazard_ratio=ratio)
    body = client.get(f"{API}/hazard-ratios?origin=landmark&landmark_years=3",
                      headers=coordinator).json
    stopped = next(r for r in body["levels"] if r["level"] == "stopped")
    curves = client.get(f"{API}/survival?origin=landmark&landmark_years=3",
                        headers=coordinator).json
    if harmful:
        assert stopped["lower"] > 1.2 and stopped["p_value"] < 0.01
        assert curves["logrank"]["p_value"] < 0.01
        by_group = {g["group"]: g["intervals"][2]["survival"] for g in curves["groups"]}
        assert by_group["stopped"] < by_group["continuing"]
    else:
        assert stopped["lower"] < 1 < stopped["upper"]
        assert curves["logrank"]["p_value"] > 0.05


def test_refusals_name_the_rule_and_what_would_make_the_question_answerable(
        client: FlaskClient, coordinator, no_noise) -> None:
    generated_cohort(400, seed=11)
    # Heart failure is rare (3 %): its level holds fewer than k records.
    response = client.get(f"{API}/hazard-ratios?covariates=presentation,cardiac_event",
                          headers=coordinator)
    assert response.status_code == 422
    assert response.json["rule"] == "min_level_size"
    assert "cardiac_event=" in response.json["detail"]
    assert "fewer than 11" in response.json["detail"]
    assert "Leave cardiac_event out" in response.json["detail"]
    small = client.get(f"{API}/survival?cardiac_event=heart_failure&presentation=de_novo",
                       headers=coordinator)
    assert small.status_code == 422 and "fewer than 11" in small.json["detail"]
    by_status = client.get(f"{API}/survival?by=cardiac_event&presentation=de_novo",
                           headers=coordinator).json
    assert by_status["logrank"]["refused"] is True
    assert by_status["logrank"]["rule"] == "min_group_size"
    assert "at least 11" in by_status["logrank"]["message"]


@pytest.mark.parametrize("query, field", [
    ("survival?origin=diagnosis", "origin"),
    ("survival?origin=landmark", "landmark_years"),
    ("survival?landmark_years=2", "landmark_years"),
    ("survival?by=site", "site"),
    ("survival?by=remission_days", "by"),
    ("survival?origin=landmark&landmark_years=2&by=hr_status", "by"),
    ("survival?years=40", "years"),
    ("survival?outcome=death", "outcome"),
    ("hazard-ratios?covariates=", "covariates"),
    ("hazard-ratios?covariates=hr_status,sex", "covariates"),
    ("hazard-ratios?covariates=hr_status&hr_status=positive", "hr_status"),
    ("survival?format=xlsx", "format"),  # one format rule for every endpoint (issue 12)
    ("hazard-ratios?covariates=hr_status&format=xlsx", "format"),
])
def test_questions_outside_the_design_are_a_400_naming_the_field(
        client: FlaskClient, coordinator, no_noise, query, field) -> None:
    response = client.get(f"{API}/{query}", headers=coordinator)
    assert response.status_code == 400, response.json
    assert response.json["errors"][0]["field"] == field


def test_csv_of_both_analyses(client: FlaskClient, coordinator, no_noise) -> None:
    generated_cohort(800, seed=12)
    survival = client.get(f"{API}/survival?by=presentation&format=csv", headers=coordinator)
    assert survival.mimetype == "text/csv"
    lines = list(csv.reader(io.StringIO(survival.get_data(as_text=True))))
    assert lines[0][:5] == ["presentation", "group_count", "from_year", "to_year", "at_risk"]
    assert len(lines) == 1 + 2 * (YEARS + 1)
    assert "p_value=" in survival.headers["Registry-Logrank"]
    assert "min_cell_count=11" in survival.headers["Registry-Disclosure"]
    typed = client.get(f"{API}/survival.csv?by=presentation", headers=coordinator)
    assert typed.mimetype == "text/csv" and typed.get_data() == survival.get_data()
    ratios = client.get(f"{API}/hazard-ratios?covariates=presentation",
                        headers={**coordinator, "Accept": "text/csv"})
    lines = list(csv.reader(io.StringIO(ratios.get_data(as_text=True))))
    assert lines[0][0] == "covariate" and lines[2][:3] == ["presentation", "recurrent", "false"]


def survival_bounds(body: dict[str, Any], slack: int) -> dict[str, float] | None:
    """The attacker on a survival answer: each group's size is those at risk at the start plus
    everyone entering; in every interval those at risk or entering have the outcome, are
    censored, or are at risk at the next; the open interval ends everyone. The largest value
    of each withheld number, or None when no table fits the published numbers."""
    names: list[str] = []
    published: list[int | None] = []
    rows: list[dict[int, int]] = []

    def variable(name: str, value: int | None) -> int:
        names.append(name)
        published.append(value)
        return len(names) - 1

    for group in body["groups"]:
        size = variable(f"{group['group']} size", group["count"])
        entries = {size: 1}
        previous = None
        for interval in group["intervals"]:
            label = f"{group['group']} year {interval['from_year']}"
            ids = {n: variable(f"{label} {n}", interval[n])
                   for n in ("at_risk", "entered", "events", "censored")}
            if previous is None:
                entries[ids["at_risk"]] = -1
            else:
                rows.append({**{previous[n]: 1 for n in ("at_risk", "entered")},
                             previous["events"]: -1, previous["censored"]: -1,
                             ids["at_risk"]: -1})
            entries[ids["entered"]] = -1
            previous = ids
        rows.append({**{previous[n]: 1 for n in ("at_risk", "entered")},
                     previous["events"]: -1, previous["censored"]: -1})
        rows.append(entries)
    matrix = np.zeros((len(rows), len(names)))
    for r, row in enumerate(rows):
        for index, coefficient in row.items():
            matrix[r, index] += coefficient
    bounds = [(0, None) if v is None else (max(0, v - slack), v + slack) for v in published]
    found: dict[str, float] = {}
    for index, value in enumerate(published):
        if value is not None:
            continue
        objective = np.zeros(len(names))
        objective[index] = -1
        result = linprog(objective, A_eq=matrix, b_eq=np.zeros(len(rows)), bounds=bounds,
                         method="highs")
        if result.status == 2:
            return None
        found[names[index]] = np.inf if result.status == 3 else -result.fun
    return found


@pytest.mark.parametrize("perturbation", ["off", "on"])
def test_survival_answers_keep_properties_1_and_2(app: Flask, client: FlaskClient, coordinator,
                                                  monkeypatch, perturbation) -> None:
    monkeypatch.setitem(app.config, "REGISTRY_PERTURBATION", perturbation)
    generated_cohort(300, seed=13)
    for query in ("by=hr_status", "origin=trastuzumab_stop", "origin=landmark&landmark_years=2"):
        body = client.get(f"{API}/survival?{query}", headers=coordinator).json
        numbers = [g["count"] for g in body["groups"]] + [
            i[n] for g in body["groups"] for i in g["intervals"]
            for n in ("at_risk", "entered", "events", "censored")]
        assert all(v is None or v == 0 or v >= K for v in numbers)  # 1.
        slack = MAX_ADJUSTMENT if perturbation == "on" else 0
        for assumed in sorted({slack, 0}):
            bounds = survival_bounds(body, assumed)
            if bounds is None:
                assert assumed < slack
                continue
            small = {n: v for n, v in bounds.items() if v < K - 1e-6}
            assert not small, (query, small)  # 2.
        for group in body["groups"]:
            curve = [i["survival"] for i in group["intervals"] if i["survival"] is not None]
            assert curve == sorted(curve, reverse=True)


def test_hazard_ratio_counts_are_protected_and_ratios_rounded(
        app: Flask, client: FlaskClient, coordinator) -> None:
    generated_cohort(1200, seed=14)
    body = client.get(f"{API}/hazard-ratios?covariates=presentation",
                      headers=coordinator).json
    assert body["disclosure"]["method"] == ["cell_key_perturbation", "suppression"]
    for row in body["levels"]:
        assert row["records"] is None or row["records"] == 0 or row["records"] >= K
        for name in ("hazard_ratio", "lower", "upper"):
            assert row[name] is None or round(row[name], 2) == row[name]


def test_analyses_answer_from_the_release_asked_for(client: FlaskClient, coordinator,
                                                    no_noise) -> None:
    """Each analysis is computed from a release: the newest by default, an earlier one when
    named, and its disclosure block names the release; records stored after the newest release
    are in no answer until the next one is cut."""
    first = generated_cohort(300, seed=15)
    second = generated_cohort(300, seed=16)
    releases = sorted(r["id"] for r in client.get("/api/v1/releases",
                                                  headers=coordinator).json["releases"])
    assert len(releases) == 2
    newest = client.get(f"{API}/survival", headers=coordinator).json
    assert newest["disclosure"]["release"] == releases[1]
    assert newest["groups"][0]["count"] == len(first) + len(second)
    earlier = client.get(f"{API}/survival?release={releases[0]}", headers=coordinator).json
    assert earlier["disclosure"]["release"] == releases[0]
    assert earlier["groups"][0]["count"] == len(first)
    ratios = client.get(f"{API}/hazard-ratios?covariates=hr_status&release={releases[0]}",
                        headers=coordinator).json
    assert ratios["disclosure"]["release"] == releases[0] and ratios["records"] == len(first)
    unknown = client.get(f"{API}/survival?release={releases[1] + 1}", headers=coordinator)
    assert unknown.status_code == 400
