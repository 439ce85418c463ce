"""The study's analyses for coordinators and stewards: survival and hazard ratios."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from marshmallow import INCLUDE

from registry.api import Blueprint
from registry.api.aggregates import (
    CSV_ANSWER, DISCLOSURE_HEADER, _csv_response, _policy, _wants_csv,
)
from registry.auth import current_caller, requires
from registry.permissions import Action
from registry.schemas.analyses import (
    RESERVED, HazardRatiosCsvQuerySchema, HazardRatiosQuerySchema, HazardRatiosSchema,
    SurvivalCsvQuerySchema, SurvivalQuerySchema, SurvivalSchema,
)
from registry.services.analysis import analyses, hazards
from registry.services.window import exports

blp = Blueprint("analyses", __name__, url_prefix="/api/v1/analyses",
                description="Survival analyses under disclosure control (coordinator, steward)")


def _filters(query: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in query.items() if name not in RESERVED}


def _design(query: dict[str, Any]) -> analyses.Design:
    return analyses.design(query["origin"], query["outcome"], query.get("landmark_years"),
                           int(current_app.config["REGISTRY_MIN_REMISSION_DAYS"]))


def _survival_csv(answer: dict[str, Any]) -> Response:
    """The survival answer as CSV; the log-rank test in the Registry-Logrank header."""
    response = _csv_response(exports.survival_csv(answer), answer["disclosure"], "survival")
    test = answer["logrank"]
    if test is not None:
        response.headers["Registry-Logrank"] = (
            f"refused=true; rule={test['rule']}" if test["refused"] else
            f"chi_square={test['chi_square']}; df={test['degrees_of_freedom']}; "
            f"p_value={test['p_value']}")
    return response


def _hazards_csv(answer: dict[str, Any]) -> Response:
    """The hazard-ratio answer as CSV."""
    return _csv_response(exports.hazard_ratios_csv(answer), answer["disclosure"],
                         "hazard-ratios")


def _survival(query: dict[str, Any]) -> dict[str, Any]:
    return analyses.survival(current_caller(), _design(query), query.get("by"), query["years"],
                             _filters(query), _policy(), query.get("release"))


def _hazard_ratios(query: dict[str, Any]) -> dict[str, Any]:
    covariates = [name.strip() for name in query["covariates"].split(",") if name.strip()]
    return hazards.hazard_ratios(current_caller(), _design(query), covariates,
                                 _filters(query), _policy(), query.get("release"))


@blp.route("/survival", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(SurvivalQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, SurvivalSchema)
@blp.alt_response(200, schema=CSV_ANSWER, content_type="text/csv", success=True,
                  headers=DISCLOSURE_HEADER,
                  description="The life tables; as CSV with format=csv or Accept: text/csv")
@blp.problems(409, 422)
def survival(query: dict[str, Any]) -> Any:
    """Survival in fixed yearly intervals, with delayed entry, medians and the log-rank test

    Per group and interval: at risk at the start, entered (delayed entry at eligibility),
    events and censored, protected like counts; the actuarial estimate with its Greenwood 95 %
    interval computed from those published counts; the median when reached; the log-rank test
    between groups (refused when a group holds fewer than k records). See docs/methods.md.
    Computed from a release (`release`, default the newest). 400: unknown parameter,
    dimension, category, format or release; 409: no release has been cut yet; 422: the cohort
    is smaller than the minimum cell count; 429: you have asked as many distinct questions of
    this release as allowed."""
    answer = _survival(query)
    return _survival_csv(answer) if _wants_csv(query) else answer


@blp.route("/survival.csv", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(SurvivalCsvQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, CSV_ANSWER, content_type="text/csv", headers=DISCLOSURE_HEADER,
              description="The life tables as CSV: one line per interval of each group")
@blp.problems(409, 422)
def survival_csv(query: dict[str, Any]) -> Any:
    """Survival as CSV (the same question and answer as /survival)"""
    return _survival_csv(_survival(query))


@blp.route("/hazard-ratios", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(HazardRatiosQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, HazardRatiosSchema)
@blp.alt_response(200, schema=CSV_ANSWER, content_type="text/csv", success=True,
                  headers=DISCLOSURE_HEADER,
                  description="The hazard ratios; as CSV with format=csv or Accept: text/csv")
@blp.problems(409, 422)
def hazard_ratios(query: dict[str, Any]) -> Any:
    """Hazard ratios from a Cox model with delayed entry on chosen covariates

    Per level: records and events (protected), hazard ratio against the reference level with
    its 95 % interval and p, and the Schoenfeld proportional-hazards check with a warning when
    it fails. Fitted only when every level holds at least k records and k events and the
    parameters are fewer than a third of the events; a refusal (422) names the rule and what
    would make the question answerable. Computed from a release (`release`, default the newest;
    409 before the first). See docs/methods.md."""
    answer = _hazard_ratios(query)
    return _hazards_csv(answer) if _wants_csv(query) else answer


@blp.route("/hazard-ratios.csv", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(HazardRatiosCsvQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, CSV_ANSWER, content_type="text/csv", headers=DISCLOSURE_HEADER,
              description="The hazard ratios as CSV: one line per covariate level")
@blp.problems(409, 422)
def hazard_ratios_csv(query: dict[str, Any]) -> Any:
    """Hazard ratios as CSV (the same question and answer as /hazard-ratios)"""
    return _hazards_csv(_hazard_ratios(query))
