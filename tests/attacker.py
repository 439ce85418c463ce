"""The attacker of privacy.md section 2, written independently of the registry's own code.

It knows every published number of a two-way table, that counts are non-negative integers adding
up to the totals (each published number within the perturbation bound of the truth when
perturbation is on), and asks by linear programming how large each withheld count could be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linprog

from registry.services.window.disclosure import MAX_ADJUSTMENT, Policy


def attacker_bounds(published: list[list[int | None]], row_totals: Sequence[int | None],
                    column_totals: Sequence[int | None], total: int | None, slack: int
                    ) -> dict[str, float] | None:
    """The attacker: the largest value of every withheld cell and total, over the cells as
    unknowns; None when the published numbers admit no table at all."""
    rows, cols = len(published), len(published[0])
    size = rows * cols
    lower, upper = [], []
    for value in (v for row in published for v in row):
        lower.append(0 if value is None else max(0, value - slack))
        upper.append(None if value is None else value + slack)
    a_ub, b_ub = [], []

    def between(weights: np.ndarray, value: int | None) -> None:
        if value is not None:
            a_ub.extend([weights, -weights])
            b_ub.extend([value + slack, -(value - slack)])

    targets: dict[str, np.ndarray] = {}
    for r in range(rows):
        weights = np.zeros(size)
        weights[r * cols:(r + 1) * cols] = 1
        between(weights, row_totals[r])
        if row_totals[r] is None:
            targets[f"row {r}"] = weights
    for c in range(cols):
        weights = np.zeros(size)
        weights[c::cols] = 1
        between(weights, column_totals[c])
        if column_totals[c] is None:
            targets[f"column {c}"] = weights
    between(np.ones(size), total)
    if total is None:
        targets["total"] = np.ones(size)
    for r in range(rows):
        for c in range(cols):
            if published[r][c] is None:
                weights = np.zeros(size)
                weights[r * cols + c] = 1
                targets[f"cell {r},{c}"] = weights
    bounds = list(zip(lower, upper))
    found: dict[str, float] = {}
    for name, weights in targets.items():
        result = linprog(-weights, A_ub=np.array(a_ub) if a_ub else None,
                         b_ub=np.array(b_ub) if b_ub else None, bounds=bounds, method="highs")
        if result.status == 2:
            return None
        found[name] = np.inf if result.status == 3 else -result.fun
    return found


def check_published(published: list[list[int | None]], row_totals: Sequence[int | None],
                    column_totals: Sequence[int | None], total: int | None,
                    policy: Policy) -> None:
    """Assert properties 1 and 2 of privacy.md section 2 for one published table."""
    numbers = [v for row in published for v in row] + list(row_totals) + list(column_totals)
    numbers.append(total)
    # 1. No small number is published.
    assert all(v is None or v == 0 or v >= policy.min_cell_count for v in numbers)
    # 2. No withheld number can be shown to be small, by the honest attacker (who knows the
    # perturbation bound) or by one who takes the published numbers as exact.
    slack = MAX_ADJUSTMENT if policy.perturbation else 0
    for assumed in sorted({slack, 0}):
        bounds = attacker_bounds(published, row_totals, column_totals, total, assumed)
        if bounds is None:
            assert assumed < slack, "the true table must satisfy the honest attacker's system"
            continue
        small = {name: v for name, v in bounds.items() if v < policy.min_cell_count - 1e-6}
        assert not small, f"withheld counts shown to be small: {small}"


def life_table_bounds(body: dict[str, Any], slack: int) -> dict[str, float] | None:
    """The attacker on a remission answer: the largest value of every withheld number, knowing
    that the total is the sum of the group sizes, that a group's size is those at risk at the
    start plus everyone entering later (delayed entry), that at every interval those at risk or
    entering either relapse, are censored or are at risk at the next, and that the open last
    interval ends everyone. None when the published numbers admit no solution."""
    names: list[str] = []
    published: list[int | None] = []

    def variable(name: str, value: int | None) -> int:
        names.append(name)
        published.append(value)
        return len(names) - 1

    rows: list[dict[int, int]] = []  # each: variable index -> coefficient, equal to zero
    total = variable("total", body["total"])
    sizes = []
    for group in body["groups"]:
        size = variable(f"{group['group']} size", group["count"])
        sizes.append(size)
        members: dict[int, int] = {size: 1}
        leaving: dict[int, int] | None = None
        for interval in group["intervals"]:
            label = f"{group['group']} year {interval['from_year']}"
            shown = variable(f"{label} at risk", interval["at_risk"])
            entered = variable(f"{label} entered", interval.get("entered", 0))
            if leaving is None:
                members[shown] = -1
            else:
                rows.append({**leaving, shown: -1})
            members[entered] = -1
            relapses = variable(f"{label} relapses", interval["relapses"])
            censored = variable(f"{label} censored", interval["censored"])
            leaving = {shown: 1, entered: 1, relapses: -1, censored: -1}
        if leaving is not None:
            rows.append(leaving)
        rows.append(members)
    rows.append({total: 1, **{size: -1 for size in sizes}})
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


def check_life_table_published(body: dict[str, Any], policy: Policy) -> None:
    """Assert properties 1 and 2 of privacy.md section 2 for a remission answer."""
    numbers = [body["total"]] + [g["count"] for g in body["groups"]] + [
        i[name] for g in body["groups"] for i in g["intervals"]
        for name in ("at_risk", "entered", "relapses", "censored")]
    assert all(v is None or v == 0 or v >= policy.min_cell_count for v in numbers)
    slack = MAX_ADJUSTMENT if policy.perturbation else 0
    for assumed in sorted({slack, 0}):
        bounds = life_table_bounds(body, assumed)
        if bounds is None:
            assert assumed < slack, "the true table must satisfy the honest attacker's system"
            continue
        small = {name: v for name, v in bounds.items() if v < policy.min_cell_count - 1e-6}
        assert not small, f"withheld numbers shown to be small: {small}"
