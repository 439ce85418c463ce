"""Pooled counts for coordinators: the catalogue, count tables and the query log (the remission
life table is the survival analysis of services/analyses.py). Counting runs in the database
(GROUP BY); every answer passes through disclosure control (services/disclosure.py) and is
logged; identical queries are limited per token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from registry.db import unit_of_work, utcnow
from registry.errors import BadRequest, QueryRefused, ServiceUnavailable, TooManyRequests
from registry.models import (
    PERTURBATION_SECRET, ApiToken, AuditEntry, QueryLogEntry, RegistrySecret, Site,
)
from registry.services.catalogue import RECORDS, SITE, Dimension, dimensions
from registry.services.disclosure import (
    Equation, NoiseDraw, Policy, contributing_sites, protect,
)
from registry.schemas.identifiers import printable_field_name
from registry.services.tokens import Caller

MAX_FILTERS = 2
REPEAT_WINDOW = timedelta(days=30)


# --- the catalogue and the checking of a query -------------------------------------------------

def _catalogue(session: Session) -> dict[str, Dimension]:
    return dimensions(tuple(session.scalars(select(Site.code).order_by(Site.code))))


def list_dimensions(caller: Caller) -> dict[str, Any]:
    """The catalogue: each dimension with its categories and meaning."""
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
    with unit_of_work() as session:
        return _checked(_catalogue(session), groups, filters)


def _query_key(endpoint: str, params: dict[str, str | None], filters: dict[str, str]) -> str:
    """The normalised query compared by the repeat limit (format and order do not matter)."""
    parts = [f"{k}={v}" for k, v in sorted(params.items()) if v] + [
        f"filter.{k}={v}" for k, v in sorted(filters.items())]
    return f"{endpoint}?" + "&".join(parts)


# --- logging, snapshot and the repeat limit ----------------------------------------------------

def _snapshot(session: Session) -> str:
    """An opaque id of the data state: every change of the records writes one audit entry."""
    last = session.scalar(select(func.max(AuditEntry.id))) or 0
    return hashlib.sha256(f"registry-data-state:{last}".encode()).hexdigest()[:16]


def _noise_draw(session: Session, snapshot: str, cohort: tuple[int, int]) -> NoiseDraw:
    """What keys the noise of an answer about `cohort` (its record count and key sum)."""
    secret = session.scalar(select(RegistrySecret.value).where(
        RegistrySecret.name == PERTURBATION_SECRET))
    if secret is None:  # the migrations draw it: a database without it was not migrated
        raise ServiceUnavailable("the registry's database is not migrated to the newest "
                                 "revision; the operator must run `registry db upgrade`",
                                 retry_after=60)
    return NoiseDraw(bytes.fromhex(secret), snapshot, cohort)


def _answer(caller: Caller, query: str, policy: Policy,
            compute: Callable[[Session, str], dict[str, Any]]) -> dict[str, Any]:
    """Answer a query once the repeat limit allows it; log it, whatever the outcome."""
    refusal: Exception | None = None
    released: dict[str, Any] | None = None
    with unit_of_work() as session:
        snapshot = _snapshot(session)
        asked = session.scalar(select(func.count()).select_from(QueryLogEntry).where(
            QueryLogEntry.token_id == caller.token_id, QueryLogEntry.query == query,
            QueryLogEntry.outcome != "limit_reached",
            QueryLogEntry.asked_at >= utcnow() - REPEAT_WINDOW))
        if asked >= policy.query_limit:
            outcome = "limit_reached"
            refusal = TooManyRequests(
                f"this query was asked {policy.query_limit} times in 30 days, the most allowed "
                "per token; the answer would not change for the same data")
        else:
            try:
                released = compute(session, snapshot)
                outcome = "answered"
            except QueryRefused as error:
                outcome, refusal = "refused", error
        session.add(QueryLogEntry(token_id=caller.token_id, query=query, snapshot=snapshot,
                                  outcome=outcome, released=released))
    if refusal is not None:
        raise refusal
    assert released is not None
    return released


def _disclosure(policy: Policy, snapshot: str, sites: int) -> dict[str, Any]:
    return {"min_cell_count": policy.min_cell_count, "method": policy.methods,
            "snapshot": snapshot, "contributing_sites": contributing_sites(sites),
            "additive": not policy.perturbation}


def _refuse_small(cohort: int, policy: Policy) -> None:
    if cohort < policy.min_cell_count:
        raise QueryRefused(f"the selected cohort has fewer than {policy.min_cell_count} "
                           "records; widen the filters")


def _released(value: int | None, **labels: Any) -> dict[str, Any]:
    if value is None:
        return {**labels, "count": None, "suppressed": True}
    return {**labels, "count": value}


# --- count tables -------------------------------------------------------------------------------

def _contributing_sites(session: Session, conditions: Iterable[Any]) -> int:
    """Sites with at least one record in the cohort (a semi-join: each stops at a first match)."""
    match = select(RECORDS.c.id).where(RECORDS.c.site_id == Site.id, *conditions).exists()
    return session.scalar(select(func.count()).select_from(Site).where(match)) or 0


def _tally(session: Session, groups: Sequence[Dimension], conditions: Iterable[Any]
           ) -> dict[tuple[str, ...], list[int]]:
    """Counts and cell-key sums per combination of categories."""
    columns = [d.column for d in groups]
    statement = (select(*columns, func.count(), func.coalesce(func.sum(RECORDS.c.cell_key), 0))
                 .where(*conditions).group_by(*columns))
    by_site = any(d.name == SITE for d in groups)  # only then are site ids turned into codes
    codes = dict(session.execute(select(Site.id, Site.code)).all()) if by_site else {}
    tally: dict[tuple[str, ...], list[int]] = {}
    for *values, count, keys in session.execute(statement):
        key = tuple(codes[v] if d.name == SITE else d.label(v) for d, v in zip(groups, values))
        tally[key] = [count, int(keys)]
    return tally


def count_table(caller: Caller, rows: str, columns: str | None, filters: dict[str, str],
                policy: Policy) -> dict[str, Any]:
    """Pooled counts by one or two dimensions with up to two filters, disclosure-controlled."""
    groups, conditions = _validated({"rows": rows, "columns": columns}, filters)
    query = _query_key("counts", {"rows": rows, "columns": columns}, filters)

    def compute(session: Session, snapshot: str) -> dict[str, Any]:
        tally = _tally(session, groups, conditions)
        cohort = (sum(count for count, _ in tally.values()),
                  sum(keys for _, keys in tally.values()))
        _refuse_small(cohort[0], policy)
        body = _tabulate(groups, tally, policy, _noise_draw(session, snapshot, cohort))
        sites = _contributing_sites(session, conditions)
        return {"rows": rows, "columns": columns, "filters": dict(sorted(filters.items())),
                **body, "disclosure": _disclosure(policy, snapshot, sites)}

    return _answer(caller, query, policy, compute)


def _tabulate(groups: list[Dimension], tally: dict[tuple[str, ...], list[int]],
              policy: Policy, draw: NoiseDraw) -> dict[str, Any]:
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
    released = protect(counts, keys, equations, policy, grid=grid if col_dim else None,
                       draw=draw)

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
    with unit_of_work(read_only=True) as session:
        statement = (select(QueryLogEntry, ApiToken.public_id, ApiToken.role)
                     .join(ApiToken, ApiToken.id == QueryLogEntry.token_id)
                     .order_by(QueryLogEntry.id.desc()).limit(limit + 1))
        if before is not None:
            statement = statement.where(QueryLogEntry.id < before)
        rows = session.execute(statement).all()
    entries = [{"id": entry.id, "asked_at": entry.asked_at, "token": public_id, "role": role,
                "query": entry.query, "snapshot": entry.snapshot, "outcome": entry.outcome,
                "released": entry.released} for entry, public_id, role in rows[:limit]]
    more = len(rows) > limit
    return {"entries": entries, "next_before": entries[-1]["id"] if more else None}
