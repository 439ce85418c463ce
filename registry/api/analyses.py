"""The study's analyses for coordinators and stewards: survival and hazard ratios."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Response, current_app
from marshmallow import INCLUDE

from registry.api import Blueprint
from registry.api.aggregates import _policy, _wants_csv
from registry.auth import current_caller, requires
from registry.schemas.analyses import (
    RESERVED, HazardRatiosQuerySchema, HazardRatiosSchema, SurvivalQuerySchema, SurvivalSchema,
)
from registry.services import analyses, hazards

blp = Blueprint("analyses", __name__, url_prefix="/api/v1/analyses",
                description="Survival analyses under disclosure control (coordinator, steward)")


def _filters(query: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in query.items() if name not in RESERVED}


def _design(query: dict[str, Any]) -> analyses.Design:
    return analyses.design(query["origin"], query["outcome"], query["landmark_years"],
                           int(current_app.config["REGISTRY_MIN_REMISSION_DAYS"]))


def _csv(name: str, header: list[str], lines: list[list[Any]], answer: dict[str, Any],
         extra: dict[str, str] | None = None) -> Response:
    """An answer as CSV (empty = withheld or not estimable); disclosure in a header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for line in lines:
        writer.writerow(["" if v is None else ("true" if v is True else "false")
                         if isinstance(v, bool) else v for v in line])
    disclosure = answer["disclosure"]
    sites = disclosure["contributing_sites"]
    headers = {"Content-Disposition": f"attachment; filename={name}.csv",
               "Registry-Disclosure": (
                   f"min_cell_count={disclosure['min_cell_count']}; "
                   f"method={','.join(disclosure['method'])}; snapshot={disclosure['snapshot']}; "
                   f"contributing_sites={'' if sites is None else sites}"), **(extra or {})}
    return Response(out.getvalue(), mimetype="text/csv", headers=headers)


def _survival_csv(answer: dict[str, Any]) -> Response:
    """One line per group and interval; the log-rank test in a header."""
    fields = ["at_risk", "entered", "events", "censored", "survival", "lower", "upper"]
    lines = [[group["group"], i["from_year"], i["to_year"], *(i[f] for f in fields),
              bool(i.get("suppressed"))]
             for group in answer["groups"] for i in group["intervals"]]
    test = answer["logrank"]
    extra = {}
    if test is not None:
        extra["Registry-Logrank"] = (f"refused; rule={test['rule']}" if test["refused"] else
                                     f"chi_square={test['chi_square']}; "
                                     f"df={test['degrees_of_freedom']}; p={test['p_value']}")
    return _csv("survival", [answer["by"] or "group", "from_year", "to_year", *fields,
                             "suppressed"], lines, answer, extra)


def _hazards_csv(answer: dict[str, Any]) -> Response:
    """One line per covariate level."""
    fields = ["covariate", "level", "reference", "records", "events", "hazard_ratio", "lower",
              "upper", "p_value"]
    lines = [[row[f] for f in fields] + [bool(row.get("suppressed"))] for row in answer["levels"]]
    return _csv("hazard-ratios", fields + ["suppressed"], lines, answer)


@blp.route("/survival", methods=["GET"])
@requires("coordinator", "steward")
@blp.arguments(SurvivalQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, SurvivalSchema)
@blp.alt_response(200, schema={"type": "string"}, content_type="text/csv", success=True,
                  description="The life tables; as CSV with format=csv or Accept: text/csv")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
@blp.alt_response(429, response="TOO_MANY_REQUESTS")
def survival(query: dict[str, Any]) -> Any:
    """Survival in fixed yearly intervals, with delayed entry, medians and the log-rank test

    Per group and interval: at risk at the start, entered (delayed entry at eligibility),
    events and censored, protected like counts; the actuarial estimate with its Greenwood 95 %
    interval computed from those published counts; the median when reached; the log-rank test
    between groups (refused when a group holds fewer than k records). See docs/methods.md.
    400: unknown parameter, dimension or category; 422: the cohort is smaller than the minimum
    cell count; 429: this question was asked too often."""
    answer = analyses.survival(current_caller(), _design(query), query["by"], query["years"],
                               _filters(query), _policy())
    return _survival_csv(answer) if _wants_csv(query) else answer


@blp.route("/hazard-ratios", methods=["GET"])
@requires("coordinator", "steward")
@blp.arguments(HazardRatiosQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, HazardRatiosSchema)
@blp.alt_response(200, schema={"type": "string"}, content_type="text/csv", success=True,
                  description="The hazard ratios; as CSV with format=csv or Accept: text/csv")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
@blp.alt_response(429, response="TOO_MANY_REQUESTS")
def hazard_ratios(query: dict[str, Any]) -> Any:
    """Hazard ratios from a Cox model with delayed entry on chosen covariates

    Per level: records and events (protected), hazard ratio against the reference level with
    its 95 % interval and p, and the Schoenfeld proportional-hazards check with a warning when
    it fails. Fitted only when every level holds at least k records and k events and the
    parameters are fewer than a third of the events; a refusal (422) names the rule and what
    would make the question answerable. See docs/methods.md."""
    covariates = [name.strip() for name in query["covariates"].split(",") if name.strip()]
    answer = hazards.hazard_ratios(current_caller(), _design(query), covariates,
                                   _filters(query), _policy())
    return _hazards_csv(answer) if _wants_csv(query) else answer
