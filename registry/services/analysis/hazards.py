"""Hazard ratios: lifelines' Cox model with delayed entry on chosen catalogue covariates, under
privacy.md 2.2 item 7: fitted only when every level of every covariate holds at least k records
and k events and the parameters are fewer than a third of the events; records and events per
level protected like counts; ratios and intervals rounded to two decimals, p-values to two
significant digits. Every refusal names its rule and what would make the question answerable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from registry.errors import QueryRefused
from registry.models import Release
from registry.permissions import Action, authorize
from registry.services.window import aggregates
from registry.services.analysis.analyses import (
    LANDMARK, MAX_COVARIATES, OUTCOME_MEANING, Design, Grouping, checked_question, read_cohort,
)
from registry.services.window.disclosure import Equation, Policy, is_suppressed, protect
from registry.services.analysis.estimators import Z95, cox, significant
from registry.services.access.tokens import Caller

PH_ALPHA = 0.05


def _refused(rule: str, message: str) -> QueryRefused:
    """A refusal naming the rule broken and, in the message, what would make it answerable."""
    return QueryRefused(message, rule=rule)


def hazard_ratios(caller: Caller, plan: Design, covariates: list[str], filters: dict[str, str],
                  policy: Policy, release_id: int | None = None) -> dict[str, Any]:
    """A Cox model of the outcome on the chosen covariates, of a release (default: the newest),
    disclosure-controlled."""
    authorize(caller.role, Action.QUERY_AGGREGATES)
    if len(covariates) > MAX_COVARIATES:
        raise aggregates._invalid("covariates", "too_many_covariates",
                                  f"at most {MAX_COVARIATES} covariates")
    if not covariates and plan.origin != "landmark":
        raise aggregates._invalid("covariates", "required", "name at least one covariate "
                                  "(comma-separated catalogue dimensions)")
    asked = list(covariates)
    # One order is computed (covariates in name order) and shown as asked, so that every
    # order of the same covariates is one question with one answer (privacy.md 2.2 item 8).
    covariates = sorted(covariates)
    dims, chosen = checked_question(covariates, filters, field="covariates")
    groupings = [Grouping(d.name, d.categories, d) for d in dims]
    if plan.origin == "landmark":
        groupings.insert(0, LANDMARK)
    query = aggregates.question_key("hazard-ratios", {**plan.params(),
                                                      "covariates": ",".join(covariates)},
                                    filters)

    def compute(session: Session, release: Release) -> dict[str, Any]:
        rows, codes = read_cohort(session, release, plan, chosen, groupings)
        names = [g.name for g in groupings]
        frame = pd.DataFrame({"entry": rows.entry, "exit": rows.exit, "event": rows.event,
                              "key": rows.key})
        for grouping, code in zip(groupings, codes):
            # A value outside the categories would be coded len(categories): none is stored.
            labels = np.array([*grouping.categories, "(other)"], dtype=object)
            frame[grouping.name] = labels[code]
        aggregates.refuse_small_cohort((len(frame), int(frame["key"].sum())), policy)
        levels = _levels(frame, groupings, policy)
        fit = _fit(frame, groupings, levels)
        body = _protected_levels(frame, groupings, levels, fit, policy)
        sites = rows.sites
        return {**plan.params(), "covariates": names,
                "filters": dict(sorted(filters.items())),
                "outcome_meaning": OUTCOME_MEANING[plan.outcome], **body,
                "disclosure": aggregates.disclosure_block(policy, release.id, sites)}

    return _in_asked_order(aggregates.answer_question(caller, release_id, query, policy,
                                                      compute), asked)


def _in_asked_order(body: dict[str, Any], asked: list[str]) -> dict[str, Any]:
    """An answer with its covariates, levels and checks in the order the question named them
    (the landmark grouping, always in the model, stays first)."""
    order = {name: i for i, name in enumerate(asked)}

    def place(name: str) -> int:
        return order.get(name, -1)

    return {**body, "covariates": sorted(body["covariates"], key=place),
            "levels": sorted(body["levels"], key=lambda row: place(row["covariate"])),
            "proportional_hazards": sorted(body["proportional_hazards"],
                                           key=lambda check: place(check["covariate"]))}


def _levels(frame: pd.DataFrame, groupings: list[Grouping], policy: Policy
            ) -> dict[str, list[str]]:
    """The levels of each covariate that hold records (the first is the reference), after the
    rules of a model: every level >= k records and >= k events, parameters < events / 3."""
    k = policy.min_cell_count
    levels: dict[str, list[str]] = {}
    for grouping in groupings:
        present = frame.groupby(grouping.name)["event"].agg(["size", "sum"])
        keys = frame.groupby(grouping.name)["key"].sum()
        event_keys = frame[frame["event"]].groupby(grouping.name)["key"].sum()
        held = [name for name in grouping.categories if name in present.index]
        for name in held:
            # "Fewer than k" is the test that withholds the level's records or events in the
            # answer (privacy.md 2.2 item 3): a fitted model never tells that a count the
            # answer would withhold is in fact k or more.
            small_records = is_suppressed(int(present.loc[name, "size"]), int(keys[name]),
                                          policy)
            if small_records or is_suppressed(int(present.loc[name, "sum"]),
                                              int(event_keys.get(name, 0)), policy):
                what = "records" if small_records else "events"
                raise _refused("min_level_size", (
                    f"{grouping.name}={name} holds fewer than {k} {what}; a model needs at "
                    f"least {k} records and {k} events in every level. Leave "
                    f"{grouping.name} out, or filter the cohort to one of its larger "
                    "categories, or ask again on a release with more follow-up"))
        if len(held) < 2:
            raise _refused("one_level", (
                f"{grouping.name} takes a single value in this cohort, so it has no effect to "
                "estimate; leave it out or widen the filters"))
        levels[grouping.name] = held
    parameters = sum(len(held) - 1 for held in levels.values())
    events = int(frame["event"].sum())
    if 3 * parameters >= events:
        raise _refused("events_per_parameter", (
            f"the model has {parameters} parameters and needs more than three events per "
            "parameter (DataSHIELD's saturation rule); choose fewer or coarser covariates"))
    return levels


def _fit(frame: pd.DataFrame, groupings: list[Grouping], levels: dict[str, list[str]]) -> Any:
    """The Cox model on indicator columns, one per non-reference level."""
    data = frame[["entry", "exit"]].astype(float)
    data["event"] = frame["event"].astype(int)
    parameters: list[str] = []
    by_covariate: dict[str, list[str]] = {}
    for grouping in groupings:
        by_covariate[grouping.name] = []
        for level in levels[grouping.name][1:]:
            column = f"{grouping.name}={level}"
            data[column] = (frame[grouping.name] == level).astype(float)
            parameters.append(column)
            by_covariate[grouping.name].append(column)
    delayed = data["entry"].nunique() > 1
    return cox(data, parameters, by_covariate, delayed)


def _interval_of_published(estimate: tuple[float, float, float, float],
                           events: tuple[int, int], published: tuple[int | None, int | None]
                           ) -> tuple[float, float, float, float]:
    """A level's hazard ratio with its 95 % interval and p as if its events and the reference
    level's were the published (protected) ones (privacy.md 2.2 item 7).

    The variance of a level's log hazard ratio is, to a close approximation,
    1/events + 1/reference events, so an interval computed on the exact data gives the exact
    numbers of events away (to within one at the published rounding), and the difference of
    two such answers (with and without a filter) a small count exactly. The model's variance
    is therefore scaled by (1/d' + 1/d'_ref) / (1/d + 1/d_ref), d' the published events: the
    ratio itself is lifelines', its interval and Wald p those of the published counts. With
    perturbation off (d' = d) this is lifelines' answer unchanged."""
    ratio, lower, upper, p = estimate
    if published == events or None in published or 0 in published or 0 in events:
        return estimate
    from scipy.stats import norm

    scale = ((1 / published[0] + 1 / published[1]) / (1 / events[0] + 1 / events[1]))
    spread = (math.log(upper) - math.log(lower)) / 2 * math.sqrt(scale)
    center = math.log(ratio)
    se = spread / Z95
    return (ratio, math.exp(center - spread), math.exp(center + spread),
            float(2 * norm.sf(abs(center) / se)) if se > 0 else p)


def _protected_levels(frame: pd.DataFrame, groupings: list[Grouping],
                      levels: dict[str, list[str]], fit: Any, policy: Policy
                      ) -> dict[str, Any]:
    """Records and events per level, protected as one system (each covariate's levels add up
    to the cohort), beside the rounded estimates."""
    counts: list[int] = [len(frame), int(frame["event"].sum())]
    keys: list[int] = [int(frame["key"].sum()), int(frame.loc[frame["event"], "key"].sum())]
    equations: list[Equation] = []
    layout: list[tuple[str, str, int, int]] = []
    for grouping in groupings:
        records_of, events_of = [], []
        for level in grouping.categories:
            chosen = frame[grouping.name] == level
            counts += [int(chosen.sum()), int((chosen & frame["event"]).sum())]
            keys += [int(frame.loc[chosen, "key"].sum()),
                     int(frame.loc[chosen & frame["event"], "key"].sum())]
            layout.append((grouping.name, level, len(counts) - 2, len(counts) - 1))
            records_of.append(len(counts) - 2)
            events_of.append(len(counts) - 1)
        equations += [(0, records_of), (1, events_of)]
    released = protect(counts, keys, equations, policy)

    true_events = {(name, level): counts[events] for name, level, _, events in layout}
    shown_events = {(name, level): released[events] for name, level, _, events in layout}
    rows = []
    for name, level, records, events in layout:
        parameter = f"{name}={level}"
        row: dict[str, Any] = {"covariate": name, "level": level,
                               "reference": level == levels[name][0],
                               "records": released[records], "events": released[events],
                               "hazard_ratio": None, "lower": None, "upper": None,
                               "p_value": None}
        if None in (row["records"], row["events"]):
            row["suppressed"] = True
        if row["reference"]:
            row["hazard_ratio"] = 1.0
        elif parameter in fit.hazard_ratios:
            reference = (name, levels[name][0])
            ratio, lower, upper, p = _interval_of_published(
                fit.hazard_ratios[parameter],
                (true_events[(name, level)], true_events[reference]),
                (shown_events[(name, level)], shown_events[reference]))
            row.update(hazard_ratio=round(ratio, 2), lower=round(lower, 2),
                       upper=round(upper, 2), p_value=significant(p))
        rows.append(row)
    checks, warnings = [], []
    for name, p in fit.proportional_hazards_p.items():
        holds = p >= PH_ALPHA
        checks.append({"covariate": name, "p_value": significant(p), "holds": holds})
        if not holds:
            warnings.append(
                f"The effect of {name} seems to change over follow-up (Schoenfeld residuals, "
                f"p = {significant(p)}): its hazard ratio is an average over time and may hide "
                "a larger early or late effect. Look at the survival curves by "
                f"{name} before relying on it.")
    if fit.convergence_trouble:
        warnings.append("The model had numerical trouble converging (often a level in which "
                        "almost every record, or almost none, has the outcome): treat its "
                        "ratios with caution, or use coarser covariates.")
    return {"records": released[0], "events": released[1], "levels": rows,
            "proportional_hazards": checks, "warnings": warnings}
