"""Disclosure control (privacy.md section 2) on random tables, checked by the attacker's own
linear program (tests/attacker.py, written independently of
registry/services/window/disclosure.py)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.models.record import CELL_KEY_MODULUS
from registry.services.window.disclosure import (
    MAX_ADJUSTMENT, Policy, adjustment, cell_key, contributing_sites, is_suppressed, perturb,
    protect,
)
from tests.attacker import attacker_bounds, check_published

K = 11
BOUNDED = settings(max_examples=30, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


def two_way(cells: list[list[int]], keys: list[list[int]], policy: Policy):
    """Protect a two-way table laid out as the service does; returns the published parts."""
    rows, cols = len(cells), len(cells[0])
    counts = [c for row in cells for c in row]
    cell_keys = [k for row in keys for k in row]
    grid = [[r * cols + c for c in range(cols)] for r in range(rows)]
    equations = []
    for r in range(rows):
        counts.append(sum(cells[r]))
        cell_keys.append(sum(keys[r]))
        equations.append((len(counts) - 1, grid[r]))
    row_totals = list(range(rows * cols, rows * cols + rows))
    for c in range(cols):
        counts.append(sum(row[c] for row in cells))
        cell_keys.append(sum(row[c] for row in keys))
        equations.append((len(counts) - 1, [grid[r][c] for r in range(rows)]))
    column_totals = list(range(rows * cols + rows, rows * cols + rows + cols))
    counts.append(sum(counts[: rows * cols]))
    cell_keys.append(sum(cell_keys[: rows * cols]))
    equations += [(len(counts) - 1, row_totals), (len(counts) - 1, column_totals)]
    out = protect(counts, cell_keys, equations, policy, grid=grid)
    published = [[out[grid[r][c]] for c in range(cols)] for r in range(rows)]
    return (published, [out[i] for i in row_totals], [out[i] for i in column_totals], out[-1],
            counts)


def check_properties(cells, keys, policy: Policy) -> None:
    """Properties 1 and 2 of privacy.md section 2 for one protected table."""
    published, row_totals, column_totals, total, _ = two_way(cells, keys, policy)
    check_published(published, row_totals, column_totals, total, policy)


tables = st.integers(2, 4).flatmap(lambda rows: st.integers(2, 4).flatmap(
    lambda cols: st.tuples(
        st.lists(st.lists(st.one_of(st.integers(0, 15), st.integers(0, 60)),
                          min_size=cols, max_size=cols), min_size=rows, max_size=rows),
        st.lists(st.lists(st.integers(0, 255), min_size=cols, max_size=cols),
                 min_size=rows, max_size=rows))))


@BOUNDED
@given(tables)
def test_random_tables_without_perturbation_keep_properties_1_and_2(table) -> None:
    cells, keys = table
    check_properties(cells, keys, Policy(min_cell_count=K, perturbation=False))


@BOUNDED
@given(tables)
def test_random_tables_with_perturbation_keep_properties_1_and_2(table) -> None:
    cells, keys = table
    check_properties(cells, keys, Policy(min_cell_count=K, perturbation=True))


@BOUNDED
@given(tables, st.integers(5, 20))
def test_any_threshold_keeps_the_properties(table, k) -> None:
    cells, keys = table
    check_properties(cells, keys, Policy(min_cell_count=k, perturbation=True))


def test_a_lone_small_cell_gets_complements_and_its_row_is_not_enough() -> None:
    policy = Policy(perturbation=False)
    published, row_totals, column_totals, total, _ = two_way(
        [[30, 4, 25], [40, 50, 12]], [[0] * 3] * 2, policy)
    flat = [v for row in published for v in row]
    assert flat[1] is None  # the 4
    assert sum(v is None for v in flat) >= 4  # a rectangle, not a lone hole
    assert row_totals == [59, 102] and column_totals == [70, 54, 37] and total == 161
    check_properties([[30, 4, 25], [40, 50, 12]], [[0] * 3] * 2, policy)


def test_the_attacker_catches_a_lone_suppression() -> None:
    # The test's attacker must be able to fail: a table with one hole in a published row.
    bounds = attacker_bounds([[30, None, 25], [40, 50, 12]], [59, 102], [70, 54, 37], 161, 0)
    assert bounds == {"cell 0,1": pytest.approx(4)}


def test_one_way_table_hides_at_least_two_cells_that_add_up_to_k() -> None:
    counts = [3, 40, 2, 50]
    out = protect(counts + [95], [0] * 5, [(4, [0, 1, 2, 3])], Policy(perturbation=False))
    hidden = [i for i in range(4) if out[i] is None]
    assert 0 in hidden and 2 in hidden
    assert sum(counts[i] for i in hidden) >= K


# --- the perturbation table ---------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 3, 4, 11, 12, 57, 1000])
def test_perturbation_is_bounded_with_mean_zero_and_keeps_counts_positive(count) -> None:
    adjustments = [adjustment(count, key) for key in range(CELL_KEY_MODULUS)]
    assert sum(adjustments) == 0
    assert all(abs(a) <= MAX_ADJUSTMENT for a in adjustments)
    assert all(count + a >= 1 for a in adjustments)


def test_zero_stays_zero_and_the_same_key_gives_the_same_count() -> None:
    assert all(perturb(0, key) == 0 for key in range(CELL_KEY_MODULUS))
    assert [perturb(40, key) for key in range(256)] == [perturb(40, key) for key in range(256)]
    assert len({perturb(40, key) for key in range(256)}) == 5


def test_contributing_sites_below_three_are_not_published() -> None:
    assert contributing_sites(1) is None and contributing_sites(2) is None
    assert contributing_sites(3) == 3


# --- fixed record keys -------------------------------------------------------------------------

CATEGORIES = 4
TRIALS = 400


def _one_patient_added(policy: Policy) -> list[tuple[int, list[int], int]]:
    """A one-way table of four categories (and its total) published before and after one
    patient joins a random category, for random tables: (the patient's category, the published
    difference of each category, the difference of the total)."""
    rng = random.Random(7)
    equations = [(CATEGORIES, list(range(CATEGORIES)))]
    pairs = []
    for _ in range(TRIALS):
        counts = [rng.randint(20, 80) for _ in range(CATEGORIES)]
        keys = [sum(rng.randrange(256) for _ in range(n)) for n in counts]
        category = rng.randrange(CATEGORIES)
        after_counts, after_keys = list(counts), list(keys)
        after_counts[category] += 1
        after_keys[category] += rng.randrange(256)  # the new patient's key

        def table(c: list[int], k: list[int]) -> list[int | None]:
            return protect(c + [sum(c)], k + [sum(k)], equations, policy)

        before, after = table(counts, keys), table(after_counts, after_keys)
        assert before == table(counts, keys)  # asking again: the same
        delta = [a - b for a, b in zip(after, before)]
        pairs.append((category, delta[:CATEGORIES], delta[CATEGORIES]))
    return pairs


def test_without_perturbation_the_difference_is_the_patient() -> None:
    # The baseline: suppression alone publishes a one-patient difference exactly.
    pairs = _one_patient_added(Policy(perturbation=False))
    assert all(delta == [int(i == c) for i in range(CATEGORIES)] and total == 1
               for c, delta, total in pairs)


def test_counts_whose_records_did_not_change_keep_their_numbers() -> None:
    # The heart of fixed record keys: nothing but a count's records draws its noise, so the
    # counts the patient did not join publish the same numbers before and after (averaging
    # them gains nothing). The count the patient joined does move; that is why two releases
    # must differ by at least k records (privacy.md 2.1; test_window_attacks measures it).
    pairs = _one_patient_added(Policy(perturbation=True))
    assert all(delta[i] == 0 for c, delta, _ in pairs for i in range(CATEGORIES) if i != c)
    assert sum(delta[c] != 1 for c, delta, _ in pairs) / TRIALS > 0.4


def test_the_cell_key_is_the_sum_of_the_record_keys_modulo_256() -> None:
    assert cell_key(255 + 3) == 2 and cell_key(0) == 0
    assert perturb(40, 300) == perturb(40, 300 - CELL_KEY_MODULUS)
    # Keys of random records spread the cell keys evenly over 0..255.
    rng = random.Random(3)
    keys = [cell_key(sum(rng.randrange(256) for _ in range(20))) for _ in range(25_600)]
    assert max(Counter(keys).values()) < 2 * len(keys) / CELL_KEY_MODULUS


def test_a_suppressed_count_and_a_refused_cohort_are_the_same_test() -> None:
    policy = Policy(min_cell_count=K, perturbation=True)
    for count in range(0, 20):
        for key in range(0, 256, 7):
            shown = protect([count], [key], [], policy)[0]
            assert (shown is None) == is_suppressed(count, key, policy)


def test_the_documentation_shows_the_perturbation_table_in_use() -> None:
    readme = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text()
    documented = {cells[0]: cells[1:] for line in readme.splitlines()
                  if len(cells := [c.strip() for c in line.strip("|").split("|")]) == 6}
    for count, label in ((0, "0"), (1, "1"), (2, "2"), (3, "3 or more"), (40, "3 or more")):
        shares = Counter(adjustment(count, key) for key in range(CELL_KEY_MODULUS))
        assert documented[label] == [str(shares[a]) if shares[a] else "" for a in range(-2, 3)]
