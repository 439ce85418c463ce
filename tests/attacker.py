"""The attacker of privacy.md section 2, written independently of the registry's own code.

It knows every published number of a two-way table, that counts are non-negative integers adding
up to the totals (each published number within the perturbation bound of the truth when
perturbation is on), and asks by linear programming how large each withheld count could be.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linprog

from registry.services.disclosure import MAX_ADJUSTMENT, Policy


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
