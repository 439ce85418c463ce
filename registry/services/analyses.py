"""The study's analyses for coordinators: survival in fixed yearly intervals with delayed entry,
the log-rank test, and Cox hazard ratios, all under the disclosure control of privacy.md
section 2 (counts protected by services/disclosure.py; every estimate derived from the
protected counts; models only on large enough levels, rounded).

Records are read from one selectable (`source`: the released records, of one release chosen
by in_release), so the analyses never depend on where the rows come from. The cohorts,
the time scales and the estimators are described in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger, BindParameter, ColumnElement, and_, case, cast, func, literal, or_, select, text,
    tuple_,
)
from sqlalchemy.orm import Session

from registry.models import Release, Site, in_release
from registry.permissions import Action, authorize
from registry.services import aggregates
from registry.services.catalogue import RECORDS, SITE, Dimension, dimensions
from registry.services.disclosure import Equation, Policy, is_suppressed, protect
from registry.services.estimators import (
    IntervalCounts, actuarial, logrank, median, significant, year_start,
)
from registry.services.release_memo import ReleaseMemo
from registry.services.tokens import Caller

ORIGINS = ("remission_start", "trastuzumab_stop", "landmark")
OUTCOMES = ("relapse", "relapse_or_death")
DEFAULT_YEARS, MAX_YEARS = 10, 20
MAX_LANDMARK_YEARS = 15
MAX_COVARIATES = 4
# PostgreSQL's work_mem for the tally on exact days (see _tally).
EXACT_TALLY_WORK_MEM = "32MB"
# The tallies of releases already scanned: a new question on the same cohort (another number
# of years, or after the log was emptied) reads it again instead of scanning the release.
TALLIES = ReleaseMemo()
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


@dataclass(frozen=True)
class Cohort:
    """SQL of a design over a source: who is in it, when they enter the risk set, when they
    leave it and whether by the outcome (days from the origin)."""

    conditions: list[ColumnElement[bool]]
    entry: Any
    exit: Any
    event: Any
    at_landmark: Any = None  # the landmark's grouping expression (stopped by then)


def cohort(source: Any, plan: Design) -> Cohort:
    """The cohort of a design in `source`. Delayed entry: nobody is at risk before the day the
    inclusion rule (remission of at least min_remission_days) makes them eligible, so a record
    whose follow-up ended before then (which validation does not admit, but a stored or
    migrated state might hold) is never at risk and not in the cohort."""
    rows = _design_cohort(source, plan)
    return Cohort([*rows.conditions, rows.exit >= rows.entry], rows.entry, rows.exit,
                  rows.event, rows.at_landmark)


def _design_cohort(source: Any, plan: Design) -> Cohort:
    """Time zero, entry, exit and outcome of a design's records."""
    c = source.c
    end = func.coalesce(c.progression_day, c.last_followup_day)
    event: Any = c.progression_day.is_not(None)
    if plan.outcome == "relapse_or_death":
        event = or_(event, c.vital_status == "dead")
    eligible = c.remission_start_day + plan.min_remission_days
    if plan.origin == "remission_start":
        return Cohort([], literal(plan.min_remission_days), end - c.remission_start_day, event)
    if plan.origin == "trastuzumab_stop":
        # Discontinued in remission only (record.md: off_trastuzumab_days is empty otherwise).
        stop = c.trastuzumab_stop_day
        conditions = [c.maintenance_status == "discontinued", stop.is_not(None),
                      or_(c.progression_day.is_(None), c.progression_day > stop)]
        entry = case((eligible > stop, eligible - stop), else_=0)
        return Cohort(conditions, entry, end - stop, event)
    landmark = c.remission_start_day + plan.landmark_days
    stopped = and_(c.trastuzumab_stop_day.is_not(None), c.trastuzumab_stop_day <= landmark,
                   or_(c.trastuzumab_resume_day.is_(None), c.trastuzumab_resume_day > landmark))
    entry = literal(max(0, plan.min_remission_days - plan.landmark_days))
    return Cohort([end > landmark], entry, end - landmark, event,
                  case((stopped, AT_LANDMARK_CATEGORIES[1]), else_=AT_LANDMARK_CATEGORIES[0]))


@dataclass(frozen=True)
class Grouping:
    """What an answer is grouped by: its name, categories, SQL expression and labelling."""

    name: str | None
    categories: tuple[str, ...]
    expression: Any
    dimension: Dimension | None = None

    def label(self, value: Any) -> str:
        """The category of a selected value."""
        return self.dimension.label(value) if self.dimension else str(value)


ALL = Grouping(None, ("all",), literal("all"))


def landmark_grouping(rows: Cohort) -> Grouping:
    """The landmark design's comparison: stopped by the landmark, or continuing."""
    return Grouping(AT_LANDMARK, AT_LANDMARK_CATEGORIES, rows.at_landmark)


def checked_question(source: Any, by: Sequence[str], filters: dict[str, str],
                     field: str = "by") -> tuple[list[Dimension], list[ColumnElement[bool]]]:
    """The catalogue dimensions an analysis groups or adjusts by, and its filter conditions
    over `source` (400 naming what is allowed). The site is never crossed with an analysis."""
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
    conditions = []
    for name, category in sorted(filters.items()):
        dimension = aggregates._dimension(catalogue, name, name)
        if name in by:
            raise aggregates._invalid(name, "filter_on_grouped_dimension",
                                      "a dimension cannot be both grouped and filtered")
        if category not in dimension.categories:
            raise aggregates._invalid(name, "unknown_category",
                                      "must be one of: " + ", ".join(dimension.categories))
        conditions.append(dimension.condition(category, source))
    return chosen, conditions


def _contributing_sites(session: Session, source: Any, conditions: Sequence[Any]) -> int:
    """Sites with at least one record in the cohort."""
    match = select(source.c.site_id).where(source.c.site_id == Site.id, *conditions).exists()
    return session.scalar(select(func.count()).select_from(Site).where(match)) or 0


# --- survival ----------------------------------------------------------------------------------

def survival(caller: Caller, plan: Design, by: str | None, years: int,
             filters: dict[str, str], policy: Policy, release_id: int | None = None,
             source: Any = RECORDS) -> dict[str, Any]:
    """Actuarial survival in fixed yearly intervals with delayed entry, per group, with
    medians and the log-rank test, of a release (default: the newest), disclosure-controlled."""
    authorize(caller.role, Action.QUERY_AGGREGATES)
    if not 1 <= years <= MAX_YEARS:
        raise aggregates._invalid("years", "out_of_range", f"must be 1..{MAX_YEARS}")
    if by and plan.origin == "landmark":
        raise aggregates._invalid("by", "not_allowed_here", "the landmark design compares "
                                  "stopped and continuing; narrow the cohort with filters")
    dims, conditions = checked_question(source, [by] if by else [], filters)
    rows = cohort(source, plan)
    if plan.origin == "landmark":
        grouping = landmark_grouping(rows)
    elif dims:
        grouping = Grouping(by, dims[0].categories, dims[0].column_in(source), dims[0])
    else:
        grouping = ALL
    query = aggregates.question_key("survival", {**plan.params(), "by": by,
                                                 "years": str(years)}, filters)

    def compute(session: Session, release: Release) -> dict[str, Any]:
        where = [in_release(release.id), *conditions, *rows.conditions]
        compared = len(grouping.categories) > 1
        cohort_key = (source, plan, grouping.name, tuple(sorted(filters.items())), compared)
        tally = TALLIES.get(
            session, release, cohort_key,
            lambda: _tally(session, source, rows, grouping, where, exact=compared),
            lambda kept: len(kept.count))
        cohort_size = (int(tally.count.sum()), int(tally.keys.sum()))
        aggregates.refuse_small_cohort(cohort_size, policy)
        tables = _intervals(tally, years)
        groups = [_protected_group(name, tables.get(name), years, policy)
                  for name in grouping.categories]
        test = _logrank(tally, grouping, policy) if compared else None
        sites = tally.sites
        return {**plan.params(), "by": grouping.name, "years": years,
                "filters": dict(sorted(filters.items())),
                "outcome_meaning": OUTCOME_MEANING[plan.outcome],
                "entry_day": _entry_note(plan), "groups": groups, "logrank": test,
                "disclosure": aggregates.disclosure_block(policy, release.id, sites)}

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


@dataclass(frozen=True)
class Tally:
    """What one GROUP BY returns, as arrays: per row its group, when its records entered and
    left (days, or interval codes when `bucketed`), the outcome, the count and the key sum."""

    labels: tuple[str, ...]
    entry: np.ndarray
    exit: np.ndarray
    event: np.ndarray
    count: np.ndarray
    keys: np.ndarray
    bucketed: bool
    sites: int  # sites with records in the cohort


def _tally(session: Session, source: Any, rows: Cohort, grouping: Grouping,
           where: Sequence[Any], exact: bool) -> Tally:
    """One GROUP BY over the cohort: on exact days when a log-rank test needs them, else on
    the yearly intervals (entry: -1 at time zero, else the interval it enters in, right-closed;
    exit: (4 days + 3) // 1461, integer division in SQL). On PostgreSQL the same scan finds
    the sites with records in the cohort (it would run their semi-join as a second full
    scan): on the intervals the groups are by site too (a few rows more); on exact days, where
    that would multiply thousands of rows, the sites are a grouping set of their own. SQLite,
    which sorts to group and stops each site's semi-join at its first match, asks apart.
    Fewer keys to sort or hash (a fifth less CPU on SQLite, a little on PostgreSQL): the exit
    and the outcome are one (2 exit + outcome), and a constant of the design (the entry day
    from remission start or a landmark, the one group of an ungrouped answer) is selected, not
    grouped by."""
    entry, exit = rows.entry, rows.exit
    if not exact:
        entry = case((rows.entry == 0, -1), else_=(rows.entry * 4 - 1) // 1461)
        exit = (rows.exit * 4 + 3) // 1461
    exit_and_event = cast(exit, BigInteger) * 2 + case((rows.event, 1), else_=0)
    keys = [grouping.expression, entry, exit_and_event]
    grouped = [key for key in keys if not isinstance(key, BindParameter)]
    site = source.c.site_id
    measures = [func.count(), func.coalesce(func.sum(source.c.record_key), 0)]
    postgresql = session.get_bind().dialect.name == "postgresql"
    if not postgresql:
        statement = select(*keys, *measures).group_by(*grouped)
    elif exact:  # grouping(site_id) is 0 on the rows of the sites' own grouping set
        statement = select(*keys, site, func.grouping(site), *measures).group_by(
            func.grouping_sets(tuple_(*grouped), tuple_(site)))
        # Room to hash both sets: with the default 4 MB the planner sorts the whole cohort
        # twice on disk instead (1,000,000 records: 15 s against 3.5 s), for an estimate of
        # 200,000 groups (11,000 in fact, 8 MB of hash). For this transaction only.
        session.execute(text(f"SET LOCAL work_mem = '{EXACT_TALLY_WORK_MEM}'"))
    else:
        statement = select(*keys, site, *measures).group_by(*grouped, site)
    result = _driver_rows(session, statement.where(*where))
    if not postgresql:
        sites = _contributing_sites(session, source, where)
    elif exact:
        sites = len({row[3] for row in result if not row[4]})
        result = [row for row in result if row[4]]
    else:
        sites = len({row[3] for row in result})
    # Column by column, straight into arrays: thousands of rows on exact days.
    columns: list[Any] = list(zip(*result)) or [()] * 5
    names: dict[Any, str] = {}
    labels = [names[value] if value in names else names.setdefault(value, grouping.label(value))
              for value in columns[0]]
    packed = np.array(columns[2], dtype=np.int64)  # 2 exit + outcome
    arrays = [np.array(columns[1], dtype=np.int64), packed >> 1, (packed & 1).astype(bool),
              np.array(columns[-2], dtype=np.int64), np.array(columns[-1], dtype=np.int64)]
    for array in arrays:  # kept for later questions (TALLIES): never changed by a reader
        array.flags.writeable = False
    return Tally(tuple(labels), *arrays, not exact, sites)


def _driver_rows(session: Session, statement: Any) -> list[tuple[Any, ...]]:
    """The rows of a statement as the driver returns them (plain tuples): a tally on exact days
    runs to thousands of rows, which SQLAlchemy's row objects and type processing would make
    several times slower to read than the database takes to count them."""
    connection = session.connection()
    compiled = statement.compile(dialect=connection.dialect)
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup or ())
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(compiled), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _intervals(tally: Tally, years: int) -> dict[str, dict[str, list[list[int]]]]:
    """True counts and key sums per group in the fixed intervals: for each group, `at_risk`
    (at the start), `entered` (after the start), `events`, `censored`, each a list over
    intervals 0..years (the last open) of [count, key sum]."""
    if tally.bucketed:
        entered, left = tally.entry, tally.exit
    else:
        entered = np.where(tally.entry == 0, -1, (tally.entry * 4 - 1) // 1461)
        left = (tally.exit * 4 + 3) // 1461
    width = years + 1
    entered = np.minimum(entered, years) + 1  # 0: at risk at time zero
    left = np.minimum(left, years)
    labels = np.array(tally.labels, dtype=object)
    tables: dict[str, dict[str, list[list[int]]]] = {}
    for name in dict.fromkeys(tally.labels):
        mine = labels == name
        sums = {}
        events, censored = mine & tally.event, mine & ~tally.event
        for part, values in (("count", tally.count), ("keys", tally.keys)):
            weights = values.astype(float)
            sums[part] = (
                np.bincount(entered[mine], weights[mine], minlength=width + 1),
                np.bincount(left[events], weights[events], minlength=width),
                np.bincount(left[censored], weights[censored], minlength=width))
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
        tables[name] = table
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


def _logrank(tally: Tally, grouping: Grouping, policy: Policy) -> dict[str, Any]:
    """The log-rank test between the groups that hold records, refused when one holds fewer
    than k; on the counts per group, entry, exit and outcome (exact days). "Fewer than k" is
    the test that withholds the group's size in the same answer (privacy.md 2.2 item 3), so
    an answered test never tells that a withheld group size is in fact k or more."""
    sizes: dict[str, int] = {}
    keys: dict[str, int] = {}
    for label, count, key in zip(tally.labels, tally.count.tolist(), tally.keys.tolist()):
        sizes[label] = sizes.get(label, 0) + count
        keys[label] = keys.get(label, 0) + key
    compared = [name for name in grouping.categories if sizes.get(name)]
    k = policy.min_cell_count
    if any(is_suppressed(sizes[name], keys[name], policy) for name in compared):
        return {"refused": True, "rule": "min_group_size", "groups": compared,
                "message": f"a group holds fewer than {k} records; group by a coarser "
                           "dimension or widen the filters so that every group holds at least "
                           f"{k}"}
    if len(compared) < 2:
        return {"refused": True, "rule": "two_groups", "groups": compared,
                "message": "fewer than two groups hold records: there is nothing to compare"}
    code = {name: number for number, name in enumerate(compared)}
    groups = np.array([code[label] for label in tally.labels])
    test = logrank(groups, tally.entry, tally.exit, tally.event, tally.count.astype(float))
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
