"""Disclosure control of aggregate answers (privacy.md section 2), in one place.

An answer is a list of counts linked by additive equations (a total equals the sum of its parts):
the cells of a table with its row, column and grand totals, or the intervals of a life table.
`protect()` turns the true counts into what may be published:

1. cell-key perturbation with fixed record keys (the ABS TableBuilder and ONS method): every
   record has a secret random key, drawn once when it is created and kept for life; a count's
   cell key is the sum of its records' keys modulo 256, and a fixed table maps (count, cell key)
   to an adjustment of at most +/-2. Nothing else enters the noise (not the question, the
   release or the time), so the same records always get the same published count: asking
   again, rewording, or waiting for unrelated activity gives an attacker the same draw again;
2. primary suppression of every count that is small (1..k-1) before or after perturbation;
3. complementary suppression, smallest count first, until a linear program shows, for every
   suppressed count, that the published numbers allow it to be at least k.

Nothing here touches the database or says why a count was suppressed. Other services (the
survival analyses) protect their counts with `protect()` too: give it each count, the sum of
its records' keys, and the equations that link the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linprog

from registry.models.record import CELL_KEY_MODULUS

# Adjustments for counts of 3 or more, by share of the 256 cell keys: symmetric, so mean zero.
_ADJUSTMENTS = ((-2, 24), (-1, 56), (0, 96), (1, 56), (2, 24))
# A count of 2 may not fall to 0 (zero stays the only zero); a count of 1 is never moved.
_ADJUSTMENTS_OF_TWO = ((-1, 80), (0, 96), (1, 80))
MAX_ADJUSTMENT = 2
# Fewer contributing sites than this would tie a cohort to identifiable centres: not published.
MIN_CONTRIBUTING_SITES = 3
# Tolerance of the linear programs' floating-point optimum.
_EPSILON = 1e-6


def _column(shares: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    column = tuple(adjustment for adjustment, share in shares for _ in range(share))
    assert len(column) == CELL_KEY_MODULUS and sum(column) == 0
    return column


_COLUMN = _column(_ADJUSTMENTS)
_COLUMN_OF_TWO = _column(_ADJUSTMENTS_OF_TWO)
# Rotating the key by a multiple of the count gives each count its own (equally distributed)
# column, so equal keys of neighbouring counts do not move together.
_ROTATION = 97


def adjustment(count: int, cell_key: int) -> int:
    """The perturbation table: the adjustment of `count` for a cell key in 0..255."""
    if count <= 1:
        return 0
    column = _COLUMN_OF_TWO if count == 2 else _COLUMN
    return column[(cell_key + _ROTATION * count) % CELL_KEY_MODULUS]


def perturb(count: int, cell_key: int) -> int:
    """A count after cell-key perturbation: within +/-2, zero stays zero, never below 1 if >0."""
    return count + adjustment(count, cell_key % CELL_KEY_MODULUS)


def cell_key(record_keys: int) -> int:
    """The cell key of a count whose records' keys sum to `record_keys`."""
    return record_keys % CELL_KEY_MODULUS


def is_suppressed(count: int, record_keys: int, policy: Policy) -> bool:
    """Whether a count of its own is withheld by primary suppression (1..k-1 before or after
    perturbation): the one test behind both a suppressed cell and a refused question."""
    published = perturb(count, record_keys) if policy.perturbation else count
    return 0 < count < policy.min_cell_count or 0 < published < policy.min_cell_count


@dataclass(frozen=True)
class Policy:
    """The deployment's disclosure settings."""

    min_cell_count: int = 11
    perturbation: bool = True
    # Distinct questions one user may ask of one release (privacy.md 2.3).
    question_budget: int = 300
    # Days between two releases, at least (privacy.md 2.1).
    release_min_days: int = 30

    @classmethod
    def from_config(cls, config: Any) -> Policy:
        """The policy of an app's settings."""
        return cls(min_cell_count=int(config["REGISTRY_MIN_CELL_COUNT"]),
                   perturbation=config["REGISTRY_PERTURBATION"] == "on",
                   question_budget=int(config["REGISTRY_QUESTION_BUDGET"]),
                   release_min_days=int(config["REGISTRY_RELEASE_MIN_DAYS"]))

    @property
    def methods(self) -> list[str]:
        """Names of the methods applied, for the disclosure block."""
        return (["cell_key_perturbation"] if self.perturbation else []) + ["suppression"]


# An equation: the count at index `total` equals the sum of the counts at indexes `parts`.
Equation = tuple[int, Sequence[int]]


def largest_values(known: Sequence[int | None], equations: Sequence[Equation]
                   ) -> dict[int, float]:
    """For each unknown (None) count, the largest value it can take given the known counts,
    non-negativity and the equations; inf when unbounded.
    Empty when the known counts contradict the equations (nothing can be concluded)."""
    unknown = [index for index, value in enumerate(known) if value is None]
    if not unknown:
        return {}
    size = len(known)
    matrix = np.zeros((len(equations), size))
    for row, (total, parts) in enumerate(equations):
        matrix[row, total] += 1
        for part in parts:
            matrix[row, part] -= 1
    bounds = [(0, None) if value is None else (value, value) for value in known]
    largest: dict[int, float] = {}
    for index in unknown:
        objective = np.zeros(size)
        objective[index] = -1
        result = linprog(objective, A_eq=matrix if equations else None,
                         b_eq=np.zeros(len(equations)) if equations else None,
                         bounds=bounds, method="highs")
        if result.status == 2:  # infeasible: the published numbers are not a consistent system
            return {}
        largest[index] = float("inf") if result.status == 3 else -float(result.fun)
    return largest


def _complement_candidates(index: int, hidden: set[int], equations: Sequence[Equation],
                           size: int) -> set[int]:
    """Published counts whose suppression can free `index`: those of the equations that pin it
    hardest (fewest hidden members), else any published count."""
    best: set[int] = set()
    fewest = None
    for total, parts in equations:
        members = {total, *parts}
        if index not in members or not members - hidden:
            continue
        pinned = len(members & hidden)
        if fewest is None or pinned < fewest:
            fewest, best = pinned, set()
        if pinned == fewest:
            best |= members - hidden
    return best or set(range(size)) - hidden


def _unsafe(true: Sequence[int], published: Sequence[int], hidden: set[int],
            equations: Sequence[Equation], k: int) -> list[int]:
    """Hidden counts that could be shown to be below k, from the true or the published numbers."""
    failing: set[int] = set()
    for values in {tuple(true), tuple(published)}:
        known = [None if i in hidden else v for i, v in enumerate(values)]
        for index, largest in largest_values(known, equations).items():
            if largest < k - _EPSILON:
                failing.add(index)
    return sorted(failing)


def _rectangle(index: int, hidden: set[int], counts: Sequence[int],
               grid: Sequence[Sequence[int]]) -> set[int]:
    """For a cell of a two-way table: the cheapest three other cells that close a rectangle with
    it (the classic complement: every row and column then holds two unknowns)."""
    where = [(i, j) for i, row in enumerate(grid) for j, cell in enumerate(row) if cell == index]
    if not where:
        return set()
    (i, j), best, best_cost = where[0], set(), None
    for i2 in range(len(grid)):
        for j2 in range(len(grid[0])):
            if i2 == i or j2 == j:
                continue
            trio = {grid[i][j2], grid[i2][j], grid[i2][j2]}
            new = trio - hidden
            if not new:
                continue
            cost = (sum(counts[c] == 0 for c in new), sum(counts[c] for c in new), sorted(new))
            if best_cost is None or cost < best_cost:
                best, best_cost = new, cost
    return best


def protect(counts: Sequence[int], record_keys: Sequence[int], equations: Sequence[Equation],
            policy: Policy, grid: Sequence[Sequence[int]] | None = None) -> list[int | None]:
    """The publishable counts: perturbed, with small and revealing counts suppressed (None).

    `record_keys` holds, for each count, the sum of its records' keys (the noise depends on
    nothing else); `equations` say which count is the sum of which others; `grid` lays out the
    cells of a two-way table (indexes by row and column), if there is one."""
    k = policy.min_cell_count
    published = [perturb(c, key) if policy.perturbation else c
                 for c, key in zip(counts, record_keys)]
    hidden = {i for i, (c, p) in enumerate(zip(counts, published))
              if 0 < c < k or 0 < p < k}
    if hidden:
        # Check what the true numbers allow (the strongest attacker) and what the published ones
        # allow when they happen to be consistent; adding suppressions only widens both.
        while failing := _unsafe(counts, published, hidden, equations, k):
            chosen = _rectangle(failing[0], hidden, counts, grid) if grid else set()
            if not chosen:
                candidates = _complement_candidates(failing[0], hidden, equations, len(counts))
                if not candidates:
                    break
                chosen = {min(candidates, key=lambda i: (counts[i] == 0, counts[i], i))}
            hidden |= chosen
    return [None if i in hidden else p for i, p in enumerate(published)]


def contributing_sites(site_count: int) -> int | None:
    """The number of contributing sites as published: hidden when it would point at a centre."""
    return site_count if site_count >= MIN_CONTRIBUTING_SITES else None
