"""The statistics of the survival analyses, free of the database and of disclosure control.

- `year_of_day` / `year_start`: the fixed yearly grid (year j begins on day floor(365.25 j)).
- `actuarial`: the life-table (actuarial) estimate with its Greenwood 95 % interval, computed
  from the counts of each interval as published (privacy.md 2.2 item 7), and the median.
- `logrank`: the log-rank test between groups with delayed entry, on counts per day.
- `cox`: lifelines' Cox model with delayed entry, one row per record, with its Schoenfeld
  proportional-hazards test.

docs/methods.md states every formula used here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

YEAR_DAYS = 365.25
Z95 = 1.959963984540054


def year_of_day(day: int) -> int:
    """The yearly interval holding a day since the origin: (4 day + 3) // 1461."""
    return (4 * day + 3) // 1461


def year_start(year: int) -> int:
    """The first day of yearly interval `year`: floor(365.25 year)."""
    return 1461 * year // 4


def significant(value: float, digits: int = 2) -> float:
    """A p-value to `digits` significant digits."""
    return float(f"{value:.{digits}g}")


@dataclass(frozen=True)
class IntervalCounts:
    """One interval's published counts: at risk at its start, entered after its start (delayed
    entry), events and censored in it; None where withheld."""

    at_risk: int | None
    entered: int | None
    events: int | None
    censored: int | None


@dataclass(frozen=True)
class Estimate:
    """The actuarial estimate at the end of an interval with its 95 % interval (log-log)."""

    survival: float
    lower: float
    upper: float


def _loglog_interval(survival: float, greenwood: float) -> tuple[float, float]:
    """Kalbfleisch-Prentice 95 % interval from Greenwood's sum sum(d / (n'(n' - d)))."""
    if survival <= 0.0:
        return 0.0, 0.0
    if survival >= 1.0 or greenwood <= 0.0:
        return survival, survival
    spread = Z95 * math.sqrt(greenwood) / abs(math.log(survival))
    return survival ** math.exp(spread), survival ** math.exp(-spread)


def actuarial(intervals: Sequence[IntervalCounts]) -> list[Estimate | None]:
    """Actuarial estimates at the end of each closed interval, from its (published) counts.

    The effective number at risk is n' = at_risk + entered/2 - censored/2 (entries and
    withdrawals spread evenly over the interval; Cutler-Ederer when nobody enters late). The
    curve begins with the first interval somebody is at risk at the start of (every earlier one
    must be known to have nobody at its start): it is conditional on being in remission then.
    It stops (None) at the first withheld count or an interval nobody is exposed in."""
    estimates: list[Estimate | None] = []
    survival, greenwood, started, broken = 1.0, 0.0, False, False
    for counts in intervals:
        values = (counts.at_risk, counts.entered, counts.events, counts.censored)
        if broken or None in values:
            broken = True
            estimates.append(None)
            continue
        n, e, d, c = values  # type: ignore[misc]
        if not started:
            if n == 0:
                estimates.append(None)
                continue
            started = True
        exposed = n + e / 2 - c / 2
        if exposed <= 0 or d > exposed:
            broken = True
            estimates.append(None)
            continue
        survival *= 1 - d / exposed
        if d and exposed > d:
            greenwood += d / (exposed * (exposed - d))
        lower, upper = _loglog_interval(survival, greenwood)
        estimates.append(Estimate(survival, lower, upper))
    return estimates


def _crossing(curve: Sequence[float | None], first: int) -> float | None:
    """Years from the origin at which a curve of interval-end values first reaches 0.5, by
    linear interpolation within the interval (the curve is 1 at the start of interval
    `first`)."""
    previous = 1.0
    for year in range(first, len(curve)):
        value = curve[year]
        if value is None:
            return None
        if value <= 0.5:
            fraction = 1.0 if previous == value else (previous - 0.5) / (previous - value)
            return year + fraction
        previous = value
    return None


def median(estimates: Sequence[Estimate | None]) -> dict[str, float | None] | None:
    """The median time in years with its 95 % interval (where the interval's limits cross
    0.5), or None when the estimate never reaches 0.5."""
    first = next((i for i, e in enumerate(estimates) if e is not None), None)
    if first is None:
        return None
    survival = [None if e is None else e.survival for e in estimates]
    point = _crossing(survival, first)
    if point is None:
        return None
    lower = _crossing([None if e is None else e.lower for e in estimates], first)
    upper = _crossing([None if e is None else e.upper for e in estimates], first)
    return {"years": round(point, 2), "lower": None if lower is None else round(lower, 2),
            "upper": None if upper is None else round(upper, 2)}


@dataclass(frozen=True)
class LogRank:
    """The log-rank test between groups: chi-square statistic, degrees of freedom, p-value."""

    statistic: float
    degrees_of_freedom: int
    p_value: float


def logrank(group: np.ndarray, entry: np.ndarray, exit: np.ndarray, event: np.ndarray,
            weight: np.ndarray) -> LogRank:
    """Log-rank test with delayed entry: at each event day t, a record is at risk when
    entry <= t <= exit. Rows may stand for several records (`weight`). Variance as lifelines'
    multivariate_logrank_test, p from the chi-square distribution with groups - 1 degrees of
    freedom."""
    from scipy.stats import chi2

    labels = np.unique(group)
    times = np.unique(exit[event.astype(bool)])
    at_risk = np.zeros((len(times), len(labels)))
    deaths = np.zeros((len(times), len(labels)))
    for column, label in enumerate(labels):
        mine = group == label
        order = np.argsort(entry[mine], kind="stable")
        entries, entry_weights = entry[mine][order], np.cumsum(weight[mine][order])
        order = np.argsort(exit[mine], kind="stable")
        exits, exit_weights = exit[mine][order], np.cumsum(weight[mine][order])
        entered = np.searchsorted(entries, times, side="right")
        left = np.searchsorted(exits, times, side="left")
        at_risk[:, column] = (np.where(entered > 0, entry_weights[entered - 1], 0)
                              - np.where(left > 0, exit_weights[left - 1], 0))
        observed = mine & event.astype(bool)
        index = np.searchsorted(times, exit[observed])
        deaths[:, column] = np.bincount(index, weights=weight[observed], minlength=len(times))
    n = at_risk.sum(axis=1)
    d = deaths.sum(axis=1)
    expected = at_risk * (d / n)[:, None]
    difference = (deaths - expected).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n > 1, (n - d) / (n - 1), 1.0) * d / n ** 2
    scaled = at_risk * np.sqrt(factor)[:, None]
    variance = -scaled.T @ scaled
    variance[np.diag_indices_from(variance)] += (at_risk * (factor * n)[:, None]).sum(axis=0)
    size = len(labels) - 1
    inner = variance[:size, :size]
    statistic = float(difference[:size] @ np.linalg.pinv(inner) @ difference[:size])
    return LogRank(statistic, size, float(chi2.sf(statistic, size)))


@dataclass(frozen=True)
class CoxFit:
    """Per parameter: hazard ratio, its 95 % interval and p; the Schoenfeld test p per
    covariate (rank time transform); whether lifelines warned of numerical trouble."""

    hazard_ratios: dict[str, tuple[float, float, float, float]]
    proportional_hazards_p: dict[str, float]
    convergence_trouble: bool = False


def cox(frame: Any, parameters: Sequence[str], covariates: dict[str, Sequence[str]],
        delayed_entry: bool) -> CoxFit:
    """Fit lifelines' CoxPHFitter (Efron ties) to one row per record with columns `parameters`
    (0/1 indicators), `entry`, `exit` and `event`; entry is used only
    when it varies (`delayed_entry`), else times are counted from it. `covariates` maps each
    covariate to its parameters, for the Schoenfeld test per covariate."""
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceWarning
    from lifelines.statistics import proportional_hazard_test

    data = frame[[*parameters, "exit", "event"]].copy()
    if delayed_entry:
        data["entry"] = frame["entry"] - 0.5  # at risk from the start of the entry day
    else:
        data["exit"] = frame["exit"] - frame["entry"] + 0.5
    fitter = CoxPHFitter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # lifelines warns of numerical trouble: reported below
        fitter.fit(data, duration_col="exit", event_col="event",
                   entry_col="entry" if delayed_entry else None)
        residuals = _scaled_schoenfeld(fitter, data, parameters) if delayed_entry else None
        test = proportional_hazard_test(fitter, data, time_transform="rank",
                                        precomputed_residuals=residuals)
    summary = fitter.summary
    ratios = {name: (float(summary.loc[name, "exp(coef)"]),
                     float(summary.loc[name, "exp(coef) lower 95%"]),
                     float(summary.loc[name, "exp(coef) upper 95%"]),
                     float(summary.loc[name, "p"])) for name in parameters}
    p_values = test.summary["p"]
    by_covariate = {covariate: float(min(p_values.loc[name] for name in names))
                    for covariate, names in covariates.items() if names}
    troubled = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return CoxFit(ratios, by_covariate, troubled)


def _scaled_schoenfeld(fitter: Any, data: Any, parameters: Sequence[str]) -> Any:
    """Scaled Schoenfeld residuals with delayed entry (lifelines computes them only without):
    at each event, the covariates minus their risk-weighted mean over the records at risk then
    (entry < t <= exit; Breslow), times the events and the model's variance, in the order of
    the fitted durations (as lifelines' proportional_hazard_test expects)."""
    import pandas as pd

    order = fitter.durations.index
    x = data.loc[order, list(parameters)].to_numpy(dtype=float)
    exit = fitter.durations.to_numpy(dtype=float)
    entry = data.loc[order, "entry"].to_numpy(dtype=float)
    event = fitter.event_observed.to_numpy().astype(bool)
    risk = np.exp(x @ fitter.params_[list(parameters)].to_numpy())
    times = exit[event]

    def weighted_at_or_after(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """For each event time t: the sum of `values` over records whose key is >= t."""
        order = np.argsort(keys)
        sums = np.vstack([np.cumsum(values[order][::-1], axis=0)[::-1],
                          np.zeros((1, values.shape[1]))])
        return sums[np.searchsorted(keys[order], times, side="left")]

    weighted = np.column_stack([risk, risk[:, None] * x])
    at_risk = weighted_at_or_after(exit, weighted) - weighted_at_or_after(entry, weighted)
    mean = at_risk[:, 1:] / at_risk[:, :1]
    residuals = x[event] - mean
    scaled = event.sum() * residuals @ fitter.variance_matrix_.to_numpy()
    return pd.DataFrame(scaled, columns=list(parameters), index=order[event])
