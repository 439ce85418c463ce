"""B7 of quality.md: the survival analyses over 100,000 records (SQLite and PostgreSQL) and
1,000,000 records (PostgreSQL), each on a release of every record and against a baseline
measured in the same run on the same data; each timed answer is a question not asked before (the
query log is emptied between them, not timed):

- tabulation: GET /analyses/survival (origin trastuzumab_stop, one group) against the raw SQL
  GROUP BY of the same interval counts (bar: ratio <= 1.5), on a cohort not tallied before;
- log-rank: GET /analyses/survival?by=presentation against lifelines'
  multivariate_logrank_test on the same arrays already in memory (bar: ratio <= 2), as the
  first question on its cohort: the columns the process keeps (services/window/release_columns.py
  COLUMNS) are emptied before each timed answer, so it reads them from the release's columnar
  copy, as after a cut; and, without a bar, with the columns kept in the process (another
  question on the same release);
- Cox: GET /analyses/hazard-ratios?covariates=presentation,visceral_disease against lifelines'
  CoxPHFitter and its Schoenfeld test on the same rows already in memory (bar: ratio <= 2).

Also printed: the time to cut the release (its columnar copy included) and to build that copy
alone.

`python -m benchmarks.analyses [--quick] [--only-1m] [--cox-1m]` (--quick: 100,000 records only;
--only-1m: 1,000,000 records only; the Cox figure at 1,000,000 records only with --cox-1m, as
lifelines' fit and Schoenfeld test alone take minutes there).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import pandas as pd
from sqlalchemy import text

from benchmarks.aggregates import load
from benchmarks.common import Figure, fresh_database, print_table, timed
from registry import create_app
from registry.db import get_database, unit_of_work
from registry.models import QueryLogEntry
from registry.services.window import release_columns
from registry.services.window.disclosure import Policy
from registry.services.window.releases import cut_release
from registry.services.access.tokens import issue_token

TABULATION_BAR = 1.5
MODEL_BAR = 2.0
M = 730  # REGISTRY_MIN_REMISSION_DAYS
TABULATION = "/api/v1/analyses/survival?origin=trastuzumab_stop"
LOGRANK = "/api/v1/analyses/survival?by=presentation"
COX = "/api/v1/analyses/hazard-ratios?covariates=presentation,visceral_disease"
KEPT = "log-rank, columns kept"  # reported without a bar
# The same interval counts as the tabulation, in plain SQL (integer division on both databases).
_ENTRY = f"CASE WHEN remission_start_day + {M} > trastuzumab_stop_day " \
         f"THEN remission_start_day + {M} - trastuzumab_stop_day ELSE 0 END"
_EXIT = "COALESCE(progression_day, last_followup_day) - trastuzumab_stop_day"
RAW_TABULATION = (
    f"SELECT CASE WHEN {_ENTRY} = 0 THEN -1 ELSE ({_ENTRY} * 4 - 1) / 1461 END AS entered, "
    f"({_EXIT} * 4 + 3) / 1461 AS left_in, progression_day IS NOT NULL AS event, count(*) "
    "FROM records WHERE maintenance_status = 'discontinued' AND trastuzumab_stop_day IS NOT "
    "NULL AND (progression_day IS NULL OR progression_day > trastuzumab_stop_day) "
    "GROUP BY 1, 2, 3")
ROWS = ("SELECT presentation, visceral_disease, "
        "COALESCE(progression_day, last_followup_day) - remission_start_day AS exit, "
        "progression_day IS NOT NULL AS event FROM records")


def _median_pairs(first: Callable[[], object], second: Callable[[], object],
                  repeats: int, before: Callable[[], object]) -> tuple[float, float]:
    """Median seconds of two pieces of work, interleaved so that load falls on both alike;
    `before` (not timed) runs before each `first`."""
    before()
    first()
    second()
    pairs = []
    for _ in range(repeats):
        before()
        pairs.append((timed(first), timed(second)))
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)


def measure(url: str, repeats: int, with_cox: bool = True
            ) -> tuple[dict[str, tuple[float, float]], str]:
    """Seconds of each endpoint and of its baseline, on the app's own engine, and a line on
    the time to cut the release and to build its columnar copy."""
    from lifelines import CoxPHFitter
    from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test

    app = create_app({"DATABASE_URL": url, "REGISTRY_QUESTION_BUDGET": 10**9,
                      "REGISTRY_RATE_LIMIT": "off"})
    with app.app_context():
        # Answers are computed from a release; one release of every record, so that the
        # baselines on the live table see the same data.
        cutting = timed(lambda: cut_release(None, "benchmark", Policy.from_config(app.config)))
        with unit_of_work(read_only=True) as session:
            building = timed(lambda: release_columns.build(session, 1))
        _, secret = issue_token("coordinator")
        engine = get_database().engine
    headers = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()

    def endpoint(path: str) -> Callable[[], None]:
        def call() -> None:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)
        return call

    def forget() -> None:  # every timed answer is a question not asked before
        with engine.begin() as connection:
            connection.execute(QueryLogEntry.__table__.delete())

    def forget_cohort() -> None:  # ... whose columns this process has not read before either
        forget()
        release_columns.COLUMNS.clear()

    def raw() -> None:
        with engine.connect() as connection:
            connection.execute(text(RAW_TABULATION)).all()

    with engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(text(ROWS)).all(),
                             columns=["presentation", "visceral", "exit", "event"])
    frame["event"] = frame["event"].astype(int)
    # Records enter on day M, before any exit: times from M are the same model.
    model = pd.DataFrame({"exit": frame["exit"] - M + 0.5, "event": frame["event"],
                          "recurrent": (frame["presentation"] == "recurrent").astype(float),
                          "not_visceral": (~frame["visceral"].astype(bool)).astype(float)})

    def logrank() -> None:
        multivariate_logrank_test(frame["exit"], frame["presentation"], frame["event"])

    def cox() -> None:
        fitter = CoxPHFitter().fit(model, "exit", "event")
        proportional_hazard_test(fitter, model, time_transform="rank")

    figures = {"tabulation": _median_pairs(endpoint(TABULATION), raw, repeats, forget_cohort),
               "log-rank": _median_pairs(endpoint(LOGRANK), logrank, repeats, forget_cohort),
               KEPT: _median_pairs(endpoint(LOGRANK), logrank, max(3, repeats // 3), forget)}
    if with_cox:
        figures["Cox"] = _median_pairs(endpoint(COX), cox, max(3, repeats // 5), forget)
    engine.dispose()
    return figures, (f"cut {cutting * 1000:,.0f} ms, of which the columnar copy's build "
                     f"about {building * 1000:,.0f} ms (read and coded, not written)")


def main(argv: list[str] | None = None) -> int:
    """Run B7 and print its table; non-zero when a bar is missed."""
    argv = sys.argv[1:] if argv is None else argv
    runs = [("sqlite", 100_000, 11), ("postgresql", 100_000, 11)]
    if "--quick" not in argv:
        runs.append(("postgresql", 1_000_000, 5))
    if "--only-1m" in argv:
        runs = runs[-1:]
    figures = []
    for kind, count, repeats in runs:
        with fresh_database(kind) as url:
            load(url, count)
            # Cox at 1,000,000 records: lifelines alone takes minutes a fit (--cox-1m).
            measured, cut_line = measure(url, repeats, count < 1_000_000 or "--cox-1m" in argv)
        print(f"B7 {kind} {count:,} records: {cut_line}")
        for name, (value, baseline) in measured.items():
            bar = TABULATION_BAR if name == "tabulation" else MODEL_BAR
            against = "GROUP BY" if name == "tabulation" else "lifelines in memory"
            barred = name != KEPT
            figures.append(Figure(
                f"B7 {name}", kind, value, baseline, f"<= {bar}" if barred else "(none)",
                value / baseline <= bar or not barred,
                f"{count:,} records: endpoint {value * 1000:.0f} ms, {against} "
                f"{baseline * 1000:.0f} ms"))
        print_table(figures[-len(measured):])  # as it goes: the 1,000,000 run takes long
        sys.stdout.flush()
    print(f"B7: {TABULATION} | {LOGRANK} | {COX}")
    print_table(figures)
    return 0 if all(figure.passed for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
