"""Pooled counts for coordinators: the catalogue, count tables and the query log (the remission
life table is the survival analysis of services/analysis/analyses.py). Every answer is computed
from a release (services/window/releases.py), counted in the database (GROUP BY), protected by
disclosure control (services/window/disclosure.py) and logged.

Questions are normalised (privacy.md 2.2 item 8): every rewording of the same table (parameter
order, rows and columns swapped, JSON or CSV) is one question. A question already answered on a
release is answered again from the log, unchanged and without counting anything (releases are
immutable); what is bounded is the number of distinct questions per user and release.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, distinct, func, insert, select, text
from sqlalchemy.orm import Session

from registry.db import single_statement, unit_of_work, utcnow
from registry.errors import BadRequest, QueryRefused, TooManyRequests
from registry.models import ApiToken, QueryLogEntry, Release, Site, in_release
from registry.services.window.catalogue import RECORDS, SITE, Dimension, dimensions
from registry.services.window.disclosure import (
    Equation, Policy, contributing_sites, is_suppressed, protect,
)
from registry.services.window.releases import next_release_earliest, newest_release, resolve_release
from registry.core.identifiers import printable_field_name
from registry.services.access.tokens import Caller
from registry.permissions import Action, authorize

MAX_FILTERS = 2
# Outcomes of the query log that count as a question the user asked.
ASKED = ("answered", "refused", "repeated")


# --- the catalogue and the checking of a query -------------------------------------------------

def _catalogue(session: Session) -> dict[str, Dimension]:
    return dimensions(tuple(session.scalars(select(Site.code).order_by(Site.code))))


def list_dimensions(caller: Caller) -> dict[str, Any]:
    """The catalogue: each dimension with its categories and meaning."""
    authorize(caller.role, Action.QUERY_AGGREGATES)
    with unit_of_work(read_only=True) as session:
        catalogue = _catalogue(session)
    return {"dimensions": [
        {"name": d.name, "meaning": d.meaning, "categories": list(d.categories),
         "alone_only": d.name == SITE} for d in catalogue.values()]}


def _invalid(field: str, code: str, message: str) -> BadRequest:
    field = printable_field_name(field)  # a parameter name is the caller's text: maybe not plain
    return BadRequest(f"{field}: {message}", errors=[{"field": field, "code": code,
                                                      "message": message}])


def _dimension(catalogue: dict[str, Dimension], field: str, name: str) -> Dimension:
    if name not in catalogue:
        raise _invalid(field, "unknown_dimension", "must be one of: " + ", ".join(catalogue))
    return catalogue[name]


def _checked(catalogue: dict[str, Dimension], groups: dict[str, str | None],
             filters: dict[str, str]) -> tuple[list[Dimension], list[ColumnElement[bool]]]:
    """The grouping dimensions and filter conditions of a query, or a 400 naming what is allowed."""
    chosen = [_dimension(catalogue, field, name) for field, name in groups.items() if name]
    names = [d.name for d in chosen]
    if len(set(names)) < len(names):
        raise _invalid("columns", "same_dimension", "must differ from rows")
    if len(filters) > MAX_FILTERS:
        raise _invalid("(query)", "too_many_filters",
                       f"at most {MAX_FILTERS} filters (dimension=category) per query")
    if SITE in names + list(filters) and (len(chosen) > 1 or filters):
        raise _invalid(SITE, "site_alone", "the site may only be counted on its own: "
                                           "rows=site, no columns, no filters")
    conditions = []
    for name, category in sorted(filters.items()):
        dimension = _dimension(catalogue, name, name)
        if name in names:
            raise _invalid(name, "filter_on_grouped_dimension",
                           "a dimension cannot be both grouped and filtered")
        if category not in dimension.categories:
            raise _invalid(name, "unknown_category",
                           "must be one of: " + ", ".join(dimension.categories))
        conditions.append(dimension.condition(category))
    return chosen, conditions


def _validated(groups: dict[str, str | None], filters: dict[str, str]
               ) -> tuple[list[Dimension], list[ColumnElement[bool]]]:
    """Check a query against the catalogue before anything of it reaches the database or the
    query log (a 400 is neither counted nor logged)."""
    codes: tuple[str, ...] = ()
    if SITE in groups.values():  # the site codes are the categories of rows=site only
        with single_statement() as connection:
            codes = tuple(connection.scalars(select(Site.code).order_by(Site.code)))
    return _checked(dimensions(codes), groups, filters)


def question_key(endpoint: str, params: dict[str, str | None], filters: dict[str, str]
                 ) -> str:
    """The normalised question: endpoint, sorted parameters and filters (order, format and the
    orientation of a two-way table do not matter: callers sort the dimensions)."""
    parts = [f"{k}={v}" for k, v in sorted(params.items()) if v] + [
        f"filter.{k}={v}" for k, v in sorted(filters.items())]
    return f"{endpoint}?" + "&".join(parts)


# --- releases, the question budget and the log -------------------------------------------------

def _same_policy(released: dict[str, Any] | None, policy: Policy) -> bool:
    """Whether a logged answer was protected under the policy in force now."""
    disclosure = (released or {}).get("disclosure") or {}
    return (disclosure.get("min_cell_count") == policy.min_cell_count
            and disclosure.get("method") == policy.methods)


def _earlier_answer(session: Session, caller: Caller, release_id: int, key: str
                    ) -> tuple[dict[str, Any] | None, bool]:
    """The logged answer (or refusal) of this question on this release, if one was given (the
    caller's own first, else anyone's), and whether the caller asked it before. One statement:
    the caller's first asking of a question is always logged as answered or refused."""
    mine = QueryLogEntry.token_id == caller.token_id
    row = session.execute(
        select(QueryLogEntry.released, mine).where(
            QueryLogEntry.release_id == release_id, QueryLogEntry.query == key,
            QueryLogEntry.outcome.in_(("answered", "refused")))
        .order_by(mine.desc(), QueryLogEntry.id.desc()).limit(1)).first()
    if row is None:
        return None, False
    return row[0], bool(row[1])


def _over_budget(session: Session, caller: Caller, release: Release, policy: Policy
                 ) -> TooManyRequests | None:
    """The 429 of a user who has asked as many distinct questions of the release as allowed."""
    asked = session.scalar(select(func.count(distinct(QueryLogEntry.query))).where(
        QueryLogEntry.token_id == caller.token_id, QueryLogEntry.release_id == release.id,
        QueryLogEntry.outcome.in_(ASKED))) or 0
    if asked < policy.question_budget:
        return None
    raised = session.scalar(select(ApiToken.question_budget).where(
        ApiToken.id == caller.token_id))
    if raised is not None and asked < raised:
        return None
    newest = newest_release(session)
    earliest = next_release_earliest(newest, policy)
    wait = max(60, math.ceil((earliest - utcnow()).total_seconds()))
    return TooManyRequests(
        f"you have asked {asked} distinct questions of release {release.id}, the most allowed "
        f"per user and release (a steward may raise it for one user); questions you have "
        f"asked before "
        f"stay free and give the same answer. The budget starts again with the next release, "
        f"which can be cut from {earliest:%Y-%m-%d} UTC at the earliest",
        headers={"Retry-After": str(wait)})


def _refusal(policy: Policy) -> QueryRefused:
    """The refusal of a question whose cohort is too small: it says what a suppressed count
    says ("fewer than k"), no more (privacy.md 2.2 item 3)."""
    return QueryRefused(f"the selected cohort has fewer than {policy.min_cell_count} records, "
                        "as a suppressed count does; widen the filters")


# PostgreSQL: a repeat's log line in one statement that does not wait for the disk (4-5 ms of
# a ~2 ms answer on a busy machine); a crash may lose the last fraction of a second of repeats,
# never an answer, a first asking or the data.
_REPEAT_LOGGED = text(
    "INSERT INTO query_log (asked_at, token_id, query, release_id, outcome)"
    " SELECT :asked_at, :token_id, :query, :release_id, 'repeated'"
    " FROM set_config('synchronous_commit', 'off', true) AS unflushed")


def _repeat(caller: Caller, release_id: int | None, key: str, policy: Policy
            ) -> dict[str, Any] | None:
    """A question the caller asked before of the release: its answer from the log (or its
    refusal raised), the repeat logged; None for anything else. The fast path of a dashboard's
    refresh: one read and one insert, each a statement of its own (the answer cannot change)."""
    log = QueryLogEntry.__table__
    release = (select(Release.id).where(Release.id == release_id) if release_id is not None
               else select(Release.id).order_by(Release.id.desc()).limit(1)).subquery()
    mine = (log.c.token_id == caller.token_id, log.c.release_id == release.c.id,
            log.c.query == key, log.c.outcome.in_(("answered", "refused")))
    first = (select(log.c.released).where(*mine).order_by(log.c.id).limit(1)
             .scalar_subquery())
    with single_statement() as connection:
        found = connection.execute(select(release.c.id, first)).first()
    if found is None or found[1] is None or not _same_policy(found[1], policy):
        return None
    values = {"asked_at": utcnow(), "token_id": caller.token_id, "query": key,
              "release_id": found[0]}
    with single_statement() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(_REPEAT_LOGGED, values)
        else:
            connection.execute(insert(log).values(**values, outcome="repeated"))
    if "refusal" in found[1]:
        raise _logged_refusal(found[1], policy)
    return found[1]


def _logged_refusal(logged: dict[str, Any], policy: Policy) -> QueryRefused:
    """A refusal given again from the log: the same rule and words as the first time (a model's
    refusal names its rule; a cohort smaller than k says only what a suppressed count says)."""
    if logged.get("rule"):
        return QueryRefused(logged["refusal"], rule=logged["rule"])
    return _refusal(policy)


def answer_question(caller: Caller, release_id: int | None, key: str, policy: Policy,
                    compute: Callable[[Session, Release], dict[str, Any]]) -> dict[str, Any]:
    """Answer a question of a release, log it, and return the answer (or raise its refusal).

    `key` is the normalised question (question_key()); `compute(session, release)` computes
    the answer from the release's records (services.releases.release_records_of) and raises
    QueryRefused (refuse_small_cohort()) for a cohort too small. A question this user asked
    before on the release is free; a new one counts against the budget. An answer already
    given on the release (to anyone) is given again from the log, without counting anything
    (releases are immutable). Analyses use this too."""
    repeated = _repeat(caller, release_id, key, policy)
    if repeated is not None:
        return repeated
    refusal: Exception | None = None
    released: dict[str, Any] | None = None
    logged: dict[str, Any] | None = None
    with unit_of_work() as session:
        release = resolve_release(session, release_id)
        earlier, asked_before = _earlier_answer(session, caller, release.id, key)
        if earlier is not None and not _same_policy(earlier, policy):
            earlier = None  # the deployment's policy changed since: answer afresh
        over = None if asked_before else _over_budget(session, caller, release, policy)
        if over is not None:
            outcome, refusal = "limit_reached", over
        else:
            if earlier is None:
                try:
                    released = logged = compute(session, release)
                except QueryRefused as error:
                    refusal = error
                    logged = {"refusal": error.detail,
                              **({"rule": error.extra["rule"]} if error.extra.get("rule")
                                 else {}),
                              "disclosure": _disclosure_of(policy, release.id)}
            elif "refusal" in earlier:
                refusal, logged = _logged_refusal(earlier, policy), earlier
            else:
                released = logged = earlier
            outcome = "refused" if refusal is not None else "answered"
            if asked_before:
                outcome, logged = "repeated", None
        session.add(QueryLogEntry(token_id=caller.token_id, query=key, release_id=release.id,
                                  outcome=outcome, released=logged))
    if refusal is not None:
        raise refusal
    assert released is not None
    return released


def _disclosure_of(policy: Policy, release_id: int) -> dict[str, Any]:
    return {"min_cell_count": policy.min_cell_count, "method": policy.methods,
            "release": release_id}


def disclosure_block(policy: Policy, release_id: int, sites: int) -> dict[str, Any]:
    """The `disclosure` block of an answer (privacy.md 2.2 item 9)."""
    return {**_disclosure_of(policy, release_id),
            "contributing_sites": contributing_sites(sites),
            "additive": not policy.perturbation}


def refuse_small_cohort(cohort: tuple[int, int], policy: Policy) -> None:
    """Refuse a cohort whose count a table would withhold (or that is empty)."""
    if cohort[0] == 0 or is_suppressed(*cohort, policy):
        raise _refusal(policy)


def _released(value: int | None, **labels: Any) -> dict[str, Any]:
    if value is None:
        return {**labels, "count": None, "suppressed": True}
    return {**labels, "count": value}


# --- count tables -------------------------------------------------------------------------------

def count_contributing_sites(session: Session, conditions: Iterable[Any]) -> int:
    """Sites with at least one record in the cohort (a semi-join: on SQLite each stops at a
    first match)."""
    match = select(RECORDS.c.id).where(RECORDS.c.site_id == Site.id, *conditions).exists()
    return session.scalar(select(func.count()).select_from(Site).where(match)) or 0


def _tally(session: Session, groups: Sequence[Dimension], conditions: Sequence[Any]
           ) -> tuple[dict[tuple[str, ...], list[int]], int]:
    """Counts and cell-key sums per combination of categories, and the number of sites with
    records in them. PostgreSQL finds the sites in the same scan, grouping by site too (a
    handful of rows more): it would run the sites' semi-join as a second full scan. SQLite,
    which sorts to group (a third key costs) and stops each site's semi-join at its first
    match, asks for the sites apart."""
    columns = [d.column for d in groups]
    by_site = any(d.name == SITE for d in groups)  # only then are site ids turned into codes
    in_scan = by_site or session.get_bind().dialect.name == "postgresql"
    grouped = [*columns, RECORDS.c.site_id] if in_scan and not by_site else columns
    statement = (select(*grouped, func.count(), func.coalesce(func.sum(RECORDS.c.record_key), 0))
                 .where(*conditions).group_by(*grouped))
    codes = dict(session.execute(select(Site.id, Site.code)).all()) if by_site else {}
    tally: dict[tuple[str, ...], list[int]] = {}
    sites: set[int] = set()
    for *values, count, keys in session.execute(statement):
        sites.add(values[-1])  # the site, when in_scan
        key = tuple(codes[v] if d.name == SITE else d.label(v) for d, v in zip(groups, values))
        cell = tally.setdefault(key, [0, 0])
        cell[0] += count
        cell[1] += int(keys)
    return tally, len(sites) if in_scan else count_contributing_sites(session, conditions)


def count_table(caller: Caller, rows: str, columns: str | None, filters: dict[str, str],
                policy: Policy, release_id: int | None = None) -> dict[str, Any]:
    """Pooled counts by one or two dimensions with up to two filters, of a release (default:
    the newest), disclosure-controlled."""
    authorize(caller.role, Action.QUERY_AGGREGATES)
    groups, conditions = _validated({"rows": rows, "columns": columns}, filters)
    # One orientation is computed (dimensions in name order) and shown as asked, so a table
    # and its transpose are one question with the same numbers.
    groups = sorted(groups, key=lambda d: d.name)
    key = question_key("counts", {"dimensions": ",".join(d.name for d in groups)}, filters)

    def compute(session: Session, release: Release) -> dict[str, Any]:
        where = [in_release(release.id), *conditions]
        tally, sites = _tally(session, groups, where)
        cohort = (sum(count for count, _ in tally.values()),
                  sum(keys for _, keys in tally.values()))
        refuse_small_cohort(cohort, policy)
        body = _tabulate(groups, tally, policy)
        return {"rows": groups[0].name, "columns": groups[1].name if len(groups) > 1 else None,
                "filters": dict(sorted(filters.items())), **body,
                "disclosure": disclosure_block(policy, release.id, sites)}

    return _oriented(answer_question(caller, release_id, key, policy, compute), rows, columns)


def _oriented(body: dict[str, Any], rows: str, columns: str | None) -> dict[str, Any]:
    """A two-way table with the rows and columns the question asked for."""
    if body["rows"] == rows:
        return body
    assert columns is not None
    row_labels = [total[rows] for total in body["column_totals"]]
    column_labels = [total[columns] for total in body["row_totals"]]
    by_labels = {(cell[rows], cell[columns]): cell for cell in body["cells"]}
    cells = []
    for r in row_labels:
        for c in column_labels:
            cell = by_labels[(r, c)]
            cells.append(_released(cell["count"], **{rows: r, columns: c}))
    return {**body, "rows": rows, "columns": columns, "cells": cells,
            "row_totals": body["column_totals"], "column_totals": body["row_totals"]}


def _tabulate(groups: list[Dimension], tally: dict[tuple[str, ...], list[int]],
              policy: Policy) -> dict[str, Any]:
    """Cells, margins and total of a one- or two-way table, after disclosure control."""
    row_dim = groups[0]
    col_dim = groups[1] if len(groups) > 1 else None
    row_cats = row_dim.categories
    col_cats = col_dim.categories if col_dim else ("",)
    width = len(col_cats)
    counts: list[int] = []
    keys: list[int] = []

    def add(count: int, key: int) -> int:
        counts.append(count)
        keys.append(key)
        return len(counts) - 1

    def cell(r: str, c: str) -> list[int]:
        return tally.get((r, c) if col_dim else (r,), [0, 0])

    grid = [[add(*cell(r, c)) for c in col_cats] for r in row_cats]
    equations: list[Equation] = []
    row_totals: list[int] = []
    column_totals: list[int] = []
    if col_dim:
        for r, row in zip(row_cats, grid):
            row_totals.append(add(sum(counts[i] for i in row), sum(keys[i] for i in row)))
            equations.append((row_totals[-1], row))
        for j in range(width):
            column = [row[j] for row in grid]
            column_totals.append(add(sum(counts[i] for i in column),
                                     sum(keys[i] for i in column)))
            equations.append((column_totals[-1], column))
    total = add(sum(counts[i] for row in grid for i in row),
                sum(keys[i] for row in grid for i in row))
    if col_dim:
        equations += [(total, row_totals), (total, column_totals)]
    else:
        equations.append((total, [row[0] for row in grid]))
    released = protect(counts, keys, equations, policy, grid=grid if col_dim else None)

    cells = []
    for r, row in zip(row_cats, grid):
        for c, index in zip(col_cats, row):
            labels = {row_dim.name: r, **({col_dim.name: c} if col_dim else {})}
            cells.append(_released(released[index], **labels))
    return {
        "cells": cells,
        "row_totals": [_released(released[i], **{row_dim.name: r})
                       for r, i in zip(row_cats, row_totals)],
        "column_totals": [_released(released[i], **{col_dim.name: c})
                          for c, i in zip(col_cats, column_totals)] if col_dim else [],
        "total": released[total],
    }


# --- the query log (steward) ---------------------------------------------------------------------

def read_query_log(caller: Caller, limit: int, before: int | None) -> dict[str, Any]:
    """The aggregate query log, newest first, a page at a time."""
    authorize(caller.role, Action.READ_QUERY_LOG)
    with unit_of_work(read_only=True) as session:
        statement = (select(QueryLogEntry, ApiToken.public_id, ApiToken.role)
                     .join(ApiToken, ApiToken.id == QueryLogEntry.token_id)
                     .order_by(QueryLogEntry.id.desc()).limit(limit + 1))
        if before is not None:
            statement = statement.where(QueryLogEntry.id < before)
        rows = session.execute(statement).all()
    entries = [{"id": entry.id, "asked_at": entry.asked_at, "token": public_id, "role": role,
                "query": entry.query, "release": entry.release_id, "snapshot": entry.snapshot,
                "outcome": entry.outcome,
                "released": entry.released} for entry, public_id, role in rows[:limit]]
    more = len(rows) > limit
    return {"entries": entries, "next_before": entries[-1]["id"] if more else None}
