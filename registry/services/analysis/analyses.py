"""The study's analyses for coordinators: survival in fixed yearly intervals with delayed entry,
the log-rank test, and Cox hazard ratios, all under the disclosure control of privacy.md
section 2 (counts protected by services/window/disclosure.py; every estimate derived from the
protected counts; models only on large enough levels, rounded).

Records are read from the columnar copy of a release (services/window/release_columns.py): the
columns a question needs, as arrays, kept in the process once read; the cohort rules of a
design, its filters and groupings are numpy over them, written once here (cohort()) for the
survival curves, the log-rank test and the Cox model (services/analysis/hazards.py). The
cohorts, the time scales and the estimators are described in docs/methods.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from registry.models import Release
from registry.permissions import Action, authorize
from registry.services.window import aggregates, release_columns
from registry.services.window.catalogue import SITE, Dimension, dimensions
from registry.services.window.disclosure import Equation, Policy, is_suppressed, protect
from registry.services.analysis.estimators import (
    IntervalCounts, actuarial, logrank, median, significant, year_start,
)
from registry.services.window.release_columns import (
    LAST_FOLLOWUP, MAINTENANCE, NULL_DAY, PROGRESSION, REMISSION_START, RESUME, STOP, VITAL,
    Column,
)
from registry.services.access.tokens import Caller

ORIGINS = ("remission_start", "trastuzumab_stop", "landmark")
OUTCOMES = ("relapse", "relapse_or_death")
DEFAULT_YEARS, MAX_YEARS = 10, 20
MAX_LANDMARK_YEARS = 15
MAX_COVARIATES = 4
# The landmark design's grouping: trastuzumab stopped by the landmark, or not.
AT_LANDMARK = "trastuzumab_at_landmark"
AT_LANDMARK_CATEGORIES = ("continuing", "stopped")
OUTCOME_MEANING = {
    "relapse": "relapse (progression); death without relapse is censored at the last "
               "follow-up (the cause-specific hazard of relapse)",
    "relapse_or_death": "relapse (progression) or death from any cause, whichever comes "
                        "first (relapse-free survival)",
}


@dataclass(frozen=True)
class Design:
    """The time scale of an analysis: its origin, outcome and the inclusion rule's entry."""

    origin: str
    outcome: str
    min_remission_days: int
    landmark_years: int | None = None

    @property
    def landmark_days(self) -> int:
        """Days from remission start to the landmark."""
        return year_start(self.landmark_years or 0)

    def params(self) -> dict[str, str | None]:
        """The design as query parameters (for the normalised question)."""
        return {"origin": self.origin, "outcome": self.outcome,
                "landmark_years": None if self.landmark_years is None
                else str(self.landmark_years)}


def design(origin: str, outcome: str, landmark_years: int | None,
           min_remission_days: int) -> Design:
    """Check the time scale of a question (400 naming what is allowed)."""
    if origin not in ORIGINS:
        raise aggregates._invalid("origin", "unknown_origin",
                                  "must be one of: " + ", ".join(ORIGINS))
    if outcome not in OUTCOMES:
        raise aggregates._invalid("outcome", "unknown_outcome",
                                  "must be one of: " + ", ".join(OUTCOMES))
    if origin == "landmark":
        if landmark_years is None or not 1 <= landmark_years <= MAX_LANDMARK_YEARS:
            raise aggregates._invalid("landmark_years", "landmark_required",
                                      f"origin=landmark needs landmark_years=1..."
                                      f"{MAX_LANDMARK_YEARS}")
    elif landmark_years is not None:
        raise aggregates._invalid("landmark_years", "not_allowed_here",
                                  "only with origin=landmark")
    return Design(origin, outcome, min_remission_days, landmark_years)


# Columns every design reads besides the days (services/window/release_columns.py).
_ALWAYS = ("record_key", "site_id", REMISSION_START, PROGRESSION,
           LAST_FOLLOWUP)


def design_columns(plan: Design) -> tuple[str, ...]:
    """The columns of a release a design reads."""
    names = list(_ALWAYS)
    if plan.outcome == "relapse_or_death":
        names.append(VITAL)
    if plan.origin == "trastuzumab_stop":
        names += [MAINTENANCE, STOP]
    elif plan.origin == "landmark":
        names += [STOP, RESUME]
    return tuple(names)


@dataclass(frozen=True)
class Cohort:
    """The records of a design in a release, as arrays: which records of the release are in it
    (`chosen`), and for each of them when it enters the risk set, when it leaves it and whether
    by the outcome (days from the origin), its key, its site, and for the landmark design
    whether trastuzumab had been stopped by then (0 continuing, 1 stopped)."""

    chosen: np.ndarray
    entry: np.ndarray
    exit: np.ndarray
    event: np.ndarray
    key: np.ndarray
    site: np.ndarray
    at_landmark: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """Records and the sum of their keys."""
        return len(self.exit), int(self.key.sum())

    @property
    def sites(self) -> int:
        """Sites with records in the cohort."""
        return len(np.unique(self.site))


def _days(columns: dict[str, Column], name: str) -> tuple[np.ndarray, np.ndarray]:
    """A day column as int64 and whether each value is recorded (not NULL)."""
    values = columns[name].values
    return values.astype(np.int64), values != NULL_DAY


def cohort(columns: dict[str, Column], plan: Design, chosen: np.ndarray) -> Cohort:
    """The cohort of a design among the `chosen` records (the filters' mask) of a release.

    The rules, as SQL would apply them to the release's rows (a comparison with an empty
    value is not true): time zero is remission start, the stop of trastuzumab or the landmark;
    the end is progression, else the last follow-up; the outcome is progression (or death,
    for relapse_or_death). The trastuzumab_stop origin holds only records that discontinued
    in remission (record.md: off_trastuzumab_days is empty otherwise). Delayed entry: nobody
    is at risk before the day the inclusion rule (remission of at least min_remission_days)
    makes them eligible, so a record whose follow-up ended before then (which validation
    does not admit, but a stored or migrated state might hold) is never at risk and not in
    the cohort."""
    start, started = _days(columns, REMISSION_START)
    progression, progressed = _days(columns, PROGRESSION)
    last, followed = _days(columns, LAST_FOLLOWUP)
    end = np.where(progressed, progression, last)
    known = chosen & started & (progressed | followed)
    event = progressed
    if plan.outcome == "relapse_or_death":
        event = event | columns[VITAL].equals("dead")
    eligible = start + plan.min_remission_days
    at_landmark = None
    if plan.origin == "remission_start":
        entry = np.full(len(end), plan.min_remission_days, dtype=np.int64)
        exit = end - start
    elif plan.origin == "trastuzumab_stop":
        stop, stopped = _days(columns, STOP)
        known &= (columns[MAINTENANCE].equals("discontinued") & stopped
                  & (~progressed | (progression > stop)))
        entry = np.where(eligible > stop, eligible - stop, 0)
        exit = end - stop
    else:
        landmark = start + plan.landmark_days
        stop, stopped = _days(columns, STOP)
        resume, resumed = _days(columns, RESUME)
        known &= end > landmark
        entry = np.full(len(end), max(0, plan.min_remission_days - plan.landmark_days),
                        dtype=np.int64)
        exit = end - landmark
        at_landmark = (stopped & (stop <= landmark) & (~resumed | (resume > landmark))
                       ).astype(np.int64)
    chosen = known & (exit >= entry)
    return Cohort(chosen, entry[chosen], exit[chosen], event[chosen],
                  columns["record_key"].values[chosen].astype(np.int64),
                  columns["site_id"].values[chosen],
                  None if at_landmark is None else at_landmark[chosen])


@dataclass(frozen=True)
class Grouping:
    """What an answer is grouped by: its name, categories and the dimension it codes (none for
    the landmark's grouping and for one group)."""

    name: str | None
    categories: tuple[str, ...]
    dimension: Dimension | None = None

    def codes(self, columns: dict[str, Column], rows: Cohort) -> np.ndarray:
        """Per record of the cohort, the index of its category (len(categories) for a value
        outside them)."""
        if self.dimension is not None:
            column = columns[self.dimension.name]
            return column.codes_of(self.categories, self.dimension.label)[rows.chosen]
        if self.name == AT_LANDMARK:
            assert rows.at_landmark is not None
            return rows.at_landmark
        return np.zeros(len(rows.exit), dtype=np.int64)


ALL = Grouping(None, ("all",))
LANDMARK = Grouping(AT_LANDMARK, AT_LANDMARK_CATEGORIES)


@dataclass(frozen=True)
class Filters:
    """The filters of a question: (dimension, category) pairs."""

    chosen: tuple[tuple[Dimension, str], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dimension.name for dimension, _ in self.chosen)

    def mask(self, columns: dict[str, Column]) -> np.ndarray:
        """The records of the release that every filter selects."""
        size = len(columns["record_key"].values)
        selected = np.ones(size, dtype=bool)
        for dimension, category in self.chosen:
            codes = columns[dimension.name].codes_of(dimension.categories, dimension.label)
            selected &= codes == dimension.categories.index(category)
        return selected


def checked_question(by: Sequence[str], filters: dict[str, str], field: str = "by"
                     ) -> tuple[list[Dimension], Filters]:
    """The catalogue dimensions an analysis groups or adjusts by, and its filters (400 naming
    what is allowed). The site is never crossed with an analysis."""
    catalogue = {name: d for name, d in dimensions().items() if name != SITE}
    if SITE in by or SITE in filters:
        raise aggregates._invalid(SITE, "site_not_allowed",
                                  "analyses are never broken down or filtered by site")
    if len(set(by)) < len(by):
        raise aggregates._invalid(field, "same_dimension", "each dimension at most once")
    chosen = [aggregates._dimension(catalogue, field, name) for name in by]
    if len(filters) > aggregates.MAX_FILTERS:
        raise aggregates._invalid("(query)", "too_many_filters",
                                  f"at most {aggregates.MAX_FILTERS} filters "
                                  "(dimension=category) per query")
    selected = []
    for name, category in sorted(filters.items()):
        dimension = aggregates._dimension(catalogue, name, name)
        if name in by:
            raise aggregates._invalid(name, "filter_on_grouped_dimension",
                                      "a dimension cannot be both grouped and filtered")
        if category not in dimension.categories:
            raise aggregates._invalid(name, "unknown_category",
                                      "must be one of: " + ", ".join(dimension.categories))
        selected.append((dimension, category))
    return chosen, Filters(tuple(selected))


def read_cohort(session: Session, release: Release, plan: Design, filters: Filters,
                groupings: Sequence[Grouping]) -> tuple[Cohort, list[np.ndarray]]:
    """The cohort of a question on a release and its records' category codes per grouping,
    from the columns it needs of the release's columnar copy (one statement, or none when this
    process has read them before)."""
    names = (*design_columns(plan), *filters.names,
             *(g.dimension.name for g in groupings if g.dimension is not None))
    columns = release_columns.read(session, release, tuple(dict.fromkeys(names)))
    rows = cohort(columns, plan, filters.mask(columns))
    return rows, [grouping.codes(columns, rows) for grouping in groupings]


# --- survival ----------------------------------------------------------------------------------

def survival(caller: Caller, plan: Design, by: str | None, years: int,
             filters: dict[str, str], policy: Policy, release_id: int | None = None
             ) -> dict[str, Any]:
    """Actuarial survival in fixed yearly intervals with delayed entry, per group, with
    medians and the log-rank test, of a release (default: the newest), disclosure-controlled."""
    authorize(caller.role, Action.QUERY_AGGREGATES)
    if not 1 <= years <= MAX_YEARS:
        raise aggregates._invalid("years", "out_of_range", f"must be 1..{MAX_YEARS}")
    if by and plan.origin == "landmark":
        raise aggregates._invalid("by", "not_allowed_here", "the landmark design compares "
                                  "stopped and continuing; narrow the cohort with filters")
    dims, chosen = checked_question([by] if by else [], filters)
    if plan.origin == "landmark":
        grouping = LANDMARK
    elif dims:
        grouping = Grouping(by, dims[0].categories, dims[0])
    else:
        grouping = ALL
    query = aggregates.question_key("survival", {**plan.params(), "by": by,
                                                 "years": str(years)}, filters)

    def compute(session: Session, release: Release) -> dict[str, Any]:
        rows, (group,) = read_cohort(session, release, plan, chosen, [grouping])
        aggregates.refuse_small_cohort(rows.size, policy)
        tables = _intervals(rows, group, grouping, years)
        groups = [_protected_group(name, tables.get(name), years, policy)
                  for name in grouping.categories]
        compared = len(grouping.categories) > 1
        test = _logrank(rows, group, grouping, policy) if compared else None
        return {**plan.params(), "by": grouping.name, "years": years,
                "filters": dict(sorted(filters.items())),
                "outcome_meaning": OUTCOME_MEANING[plan.outcome],
                "entry_day": _entry_note(plan), "groups": groups, "logrank": test,
                "disclosure": aggregates.disclosure_block(policy, release.id, rows.sites)}

    return aggregates.answer_question(caller, release_id, query, policy, compute)


def _entry_note(plan: Design) -> str:
    """Where delayed entry puts each record, in words."""
    if plan.origin == "remission_start":
        return (f"day {plan.min_remission_days} (the inclusion rule: every record was in "
                "remission until then, so nobody is at risk before it)")
    if plan.origin == "trastuzumab_stop":
        return (f"the later of the stop and remission day {plan.min_remission_days} (records "
                "that stopped earlier are at risk only once the inclusion rule makes them "
                "eligible)")
    return (f"day {max(0, plan.min_remission_days - plan.landmark_days)} after the landmark "
            "(remission day " f"{plan.min_remission_days} at the earliest)")


def _intervals(rows: Cohort, group: np.ndarray, grouping: Grouping, years: int
               ) -> dict[str, dict[str, list[list[int]]]]:
    """True counts and key sums per group in the fixed intervals: for each group, `at_risk`
    (at the start), `entered` (after the start), `events`, `censored`, each a list over
    intervals 0..years (the last open) of [count, key sum]. A record enters at time zero
    (entry 0) or in the interval of its entry day, right-closed; it leaves in the interval of
    its exit day ((4 days + 3) // 1461)."""
    entered = np.where(rows.entry == 0, -1, (rows.entry * 4 - 1) // 1461)
    left = (rows.exit * 4 + 3) // 1461
    width = years + 1
    entered = np.minimum(entered, years) + 1  # 0: at risk at time zero
    left = np.minimum(left, years)
    keys = rows.key.astype(float)
    tables: dict[str, dict[str, list[list[int]]]] = {}
    for number in np.unique(group).tolist():
        if number >= len(grouping.categories):
            continue  # a value outside the dimension's categories: never published
        mine = group == number
        events, censored = mine & rows.event, mine & ~rows.event
        sums = {part: (np.bincount(entered[mine], weights[mine], minlength=width + 1),
                       np.bincount(left[events], weights[events], minlength=width),
                       np.bincount(left[censored], weights[censored], minlength=width))
                for part, weights in (("count", np.ones(len(keys))), ("keys", keys))}
        table = {part: [[0, 0] for _ in range(width)] for part in _PUBLISHED}
        for year in range(width):
            for slot, part in enumerate(("count", "keys")):
                into, ended, withdrawn = sums[part]
                table["entered"][year][slot] = int(into[year + 1])
                table["events"][year][slot] = int(ended[year])
                table["censored"][year][slot] = int(withdrawn[year])
                table["at_risk"][year][slot] = int(into[0]) if year == 0 else (
                    table["at_risk"][year - 1][slot] + table["entered"][year - 1][slot]
                    - table["events"][year - 1][slot] - table["censored"][year - 1][slot])
        tables[grouping.categories[number]] = table
    return tables


_PUBLISHED = ("at_risk", "entered", "events", "censored")


def _protected_group(name: str, table: dict[str, list[list[int]]] | None, years: int,
                     policy: Policy) -> dict[str, Any]:
    """One group's life table: its counts protected as one linked system (the chain from one
    interval to the next, and the group size), its estimates computed from what is published."""
    width = years + 1
    if table is None:
        table = {part: [[0, 0] for _ in range(width)] for part in _PUBLISHED}
    counts: list[int] = []
    keys: list[int] = []

    def add(count: int, key: int) -> int:
        counts.append(count)
        keys.append(key)
        return len(counts) - 1

    size = add(sum(c for c, _ in table["at_risk"][:1] + table["entered"]),
               sum(k for _, k in table["at_risk"][:1] + table["entered"]))
    index = [{part: add(*table[part][year]) for part in _PUBLISHED} for year in range(width)]
    equations: list[Equation] = [
        (size, [index[0]["at_risk"]] + [index[y]["entered"] for y in range(width)])]
    for year in range(width):
        here = index[year]
        following = [index[year + 1]["at_risk"]] if year < years else []
        leaving = [here["events"], here["censored"], *following]
        if counts[here["entered"]] == 0:
            # Nobody entered: those at risk at the start leave by the outcome, censored, or
            # stay in remission into the next interval.
            equations.append((here["at_risk"], leaving))
            continue
        # Somebody entered: those exposed in the interval (at risk at its start or entering
        # in it) leave in the same three ways.
        exposed = add(counts[here["at_risk"]] + counts[here["entered"]],
                      keys[here["at_risk"]] + keys[here["entered"]])
        equations += [(exposed, [here["at_risk"], here["entered"]]), (exposed, leaving)]
    released = protect(counts, keys, equations, policy)

    published = [IntervalCounts(*(released[index[year][part]] for part in _PUBLISHED))
                 for year in range(width)]
    estimates = actuarial(published[:years])  # the open last interval has no end
    intervals = []
    for year, counts_of_year in enumerate(published):
        estimate = estimates[year] if year < years else None
        entry = {"from_year": year, "to_year": year + 1 if year < years else None,
                 "at_risk": counts_of_year.at_risk, "entered": counts_of_year.entered,
                 "events": counts_of_year.events, "censored": counts_of_year.censored,
                 "survival": None if estimate is None else round(estimate.survival, 3),
                 "lower": None if estimate is None else round(estimate.lower, 3),
                 "upper": None if estimate is None else round(estimate.upper, 3)}
        if None in (entry["at_risk"], entry["entered"], entry["events"], entry["censored"]):
            entry["suppressed"] = True
        intervals.append(entry)
    return {**aggregates._released(released[size], group=name), "intervals": intervals,
            "median": median(estimates)}


def _logrank(rows: Cohort, group: np.ndarray, grouping: Grouping, policy: Policy
             ) -> dict[str, Any]:
    """The log-rank test between the groups that hold records, refused when one holds fewer
    than k; on the records' tally per group, entry, exit and outcome (exact days: np.unique
    on one packed key). "Fewer than k" is the test that withholds the group's size in the
    same answer (privacy.md 2.2 item 3), so an answered test never tells that a withheld
    group size is in fact k or more."""
    width = len(grouping.categories) + 1
    sizes = np.bincount(group, minlength=width).tolist()
    keys = np.bincount(group, rows.key.astype(float), minlength=width).tolist()
    compared = [name for number, name in enumerate(grouping.categories) if sizes[number]]
    k = policy.min_cell_count
    if any(is_suppressed(sizes[number], int(keys[number]), policy)
           for number, name in enumerate(grouping.categories) if sizes[number]):
        return {"refused": True, "rule": "min_group_size", "groups": compared,
                "message": f"a group holds fewer than {k} records; group by a coarser "
                           "dimension or widen the filters so that every group holds at least "
                           f"{k}"}
    if len(compared) < 2:
        return {"refused": True, "rule": "two_groups", "groups": compared,
                "message": "fewer than two groups hold records: there is nothing to compare"}
    # One integer per record (group, entry, exit, outcome): its distinct values and their
    # counts are the tally the test needs, a few thousand rows instead of every record.
    entry_bits = max(int(rows.entry.max()).bit_length(), 1)
    exit_bits = max(int(rows.exit.max()).bit_length(), 1)
    packed = (((group << entry_bits | rows.entry) << exit_bits | rows.exit) << 1
              | rows.event)
    tally, count = np.unique(packed, return_counts=True)
    event = (tally & 1).astype(bool)
    exit = (tally >> 1) & ((1 << exit_bits) - 1)
    entry = (tally >> (1 + exit_bits)) & ((1 << entry_bits) - 1)
    test = logrank(tally >> (1 + exit_bits + entry_bits), entry, exit, event,
                   count.astype(float))
    return {"refused": False, "groups": compared, "chi_square": round(test.statistic, 1),
            "degrees_of_freedom": test.degrees_of_freedom,
            "p_value": significant(test.p_value)}


def numbers_at_risk(answer: dict[str, Any]) -> dict[str, Any]:
    """The numbers at risk of a survival answer as journals print them under the plot: one row
    per group, the records at risk at the start of each year (None where withheld), from the
    first year anybody is at risk in any group (delayed entry leaves the years before empty:
    the curves begin there too). Each number is the interval's published `at_risk`."""
    groups = answer["groups"]
    width = answer["years"] + 1
    held = [year for year in range(width)
            if any(g["intervals"][year]["at_risk"] != 0 for g in groups)]
    first = held[0] if held else 0
    return {"years": list(range(first, width)),
            "groups": [{"group": g["group"],
                        "at_risk": [i["at_risk"] for i in g["intervals"][first:]]}
                       for g in groups]}


# --- the remission life table: the survival answer in the aggregates' older words --------------

REMISSION_ORIGINS = ORIGINS[:2]


def remission_table(caller: Caller, by: str | None, origin: str, filters: dict[str, str],
                    min_remission_days: int, policy: Policy, release_id: int | None = None
                    ) -> dict[str, Any]:
    """GET /aggregates/remission: the survival analysis (outcome relapse, ten closed years), its
    numbers named as before (relapses, in_remission). The same question as /analyses/survival,
    so it is logged and limited as that one."""
    if origin not in REMISSION_ORIGINS:
        raise aggregates._invalid("origin", "unknown_origin",
                                  "must be one of: " + ", ".join(REMISSION_ORIGINS))
    plan = design(origin, "relapse", None, min_remission_days)
    answer = survival(caller, plan, by, DEFAULT_YEARS, filters, policy, release_id)
    groups = []
    for group in answer["groups"]:
        intervals = [{"from_year": i["from_year"], "to_year": i["to_year"],
                      "at_risk": i["at_risk"], "entered": i["entered"],
                      "relapses": i["events"], "censored": i["censored"],
                      "in_remission": i["survival"],
                      **({"suppressed": True} if i.get("suppressed") else {})}
                     for i in group["intervals"]]
        groups.append({key: value for key, value in group.items()
                       if key not in ("intervals", "median")} | {"intervals": intervals})
    counts = [g["count"] for g in groups]
    return {"by": answer["by"], "origin": origin, "filters": answer["filters"],
            "interval_days": 365.25, "entry_day": answer["entry_day"], "groups": groups,
            "total": None if None in counts else sum(counts),
            "disclosure": answer["disclosure"]}
