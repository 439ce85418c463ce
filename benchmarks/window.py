"""The two routes privacy.md 2.3 leaves bounded, measured over many generated registries (the
figures of docs/privacy.md). tests/test_window_attacks.py runs one registry of each in CI.

- Growth averaging: a suppressed count of 4 stays the same while the registry grows by monthly
  releases (20 new records, 15 follow-ups); the attacker estimates it in each release as the
  records minus the large cohorts, and averages.
- Distinct questions within one release, in the attacker's best case (a filter leaves out
  exactly the 4 records): two questions per table give one estimate; one-way tables first,
  then two-way tables, up to the question budget.

For each: after how many releases (questions) the running mean, rounded, is within one of the
truth (and exact) and stays there. The same for survival questions (tests/test_analyses_attacks.py):
a withheld interval count of 4 (the group's patients at risk in year 3), one estimate per
dimension from a survival answer by it with and without the filter.
`python -m benchmarks.window [--registries N] [--survival-registries N]`.
"""

from __future__ import annotations

import statistics
import sys

from benchmarks.common import fresh_database
from registry import create_app
from registry.services.health import alembic_config
from registry.services.access.tokens import issue_token

REGISTRIES = 20
SURVIVAL_REGISTRIES = 8
MONTHS = 36
BUDGET = 300


def _summary(name: str, unit: str, figures: list[int | None]) -> str:
    found = sorted(f for f in figures if f is not None)
    never = len(figures) - len(found)
    if not found:
        return f"{name}: never, in {len(figures)} registries"
    quartiles = statistics.quantiles(found, n=4, method="inclusive") if len(found) > 1 \
        else [found[0]] * 3
    return (f"{name}: median {statistics.median(found):g} {unit} (quartiles "
            f"{quartiles[0]:g}-{quartiles[2]:g}, fewest {found[0]}), never in {never} "
            f"of {len(figures)} registries")


def main(argv: list[str] | None = None) -> int:
    """Measure both routes and print their figures (reported, no bar)."""
    from alembic import command

    from tests.test_aggregates_api import remove_rows
    from tests.test_analyses_attacks import survival_question_estimates
    from tests.test_window_attacks import (
        SMALL, growth_estimates, pinned_after, question_estimates,
    )

    argv = sys.argv[1:] if argv is None else argv
    registries = int(argv[argv.index("--registries") + 1]) if "--registries" in argv \
        else REGISTRIES
    survival_registries = (int(argv[argv.index("--survival-registries") + 1])
                           if "--survival-registries" in argv else SURVIVAL_REGISTRIES)
    survival: dict[int, list[int | None]] = {1: [], 0: []}
    growth: dict[int, list[int | None]] = {1: [], 0: []}
    questions: dict[int, list[int | None]] = {1: [], 0: []}
    with fresh_database("sqlite") as url:
        command.upgrade(alembic_config(url), "head")
        app = create_app({"DATABASE_URL": url, "REGISTRY_RELEASE_MIN_DAYS": 0,
                          "REGISTRY_QUESTION_BUDGET": 10**6, "REGISTRY_RATE_LIMIT": "off"})
        with app.app_context():
            client = app.test_client()
            for seed in range(registries):
                headers = {"Authorization": f"Bearer {issue_token('coordinator')[1]}"}
                remove_rows()
                estimates = growth_estimates(client, headers, 1000 + seed, MONTHS)
                for within in (1, 0):
                    growth[within].append(pinned_after(estimates, SMALL, within))
                remove_rows()
                estimates, asked = question_estimates(client, headers, 2000 + seed, True, BUDGET)
                for within in (1, 0):
                    settled = pinned_after(estimates, SMALL, within)
                    questions[within].append(None if settled is None else asked[settled - 1])
            for seed in range(survival_registries):
                headers = {"Authorization": f"Bearer {issue_token('coordinator')[1]}"}
                remove_rows()
                estimates, asked = survival_question_estimates(client, headers, 3000 + seed,
                                                               BUDGET)
                for within in (1, 0):
                    settled = pinned_after(estimates, SMALL, within)
                    survival[within].append(None if settled is None else asked[settled - 1])
    print(f"privacy.md 2.3, {registries} generated registries, a suppressed count of {SMALL}")
    print(_summary(f"growth averaging, within one (of {MONTHS} monthly releases)", "releases",
                   growth[1]))
    print(_summary("growth averaging, exact", "releases", growth[0]))
    print(_summary(f"distinct questions in one release, within one (budget {BUDGET})",
                   "questions", questions[1]))
    print(_summary("distinct questions in one release, exact", "questions", questions[0]))
    print(f"survival questions, {survival_registries} generated registries of 404 records")
    print(_summary("distinct survival questions in one release, within one", "questions",
                   survival[1]))
    print(_summary("distinct survival questions in one release, exact", "questions",
                   survival[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
