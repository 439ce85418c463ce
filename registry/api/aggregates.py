"""Pooled counts for coordinators and stewards: catalogue, counts, remission, query log.

One format rule for every endpoint: `format` names one of the formats the endpoint offers
(json, and csv for the tables; anything else answers 400), and Accept: text/csv also asks a
table for CSV. Typed clients call the .csv operations, which answer text/csv only.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from marshmallow import INCLUDE

from registry.api import Blueprint
from registry.auth import current_caller, requires
from registry.permissions import Action
from registry.schemas.aggregates import (
    RESERVED, CatalogueSchema, CountsCsvQuerySchema, CountsQuerySchema, CountsSchema,
    JsonOnlyQuerySchema, QueryLogQuerySchema, QueryLogSchema, RemissionCsvQuerySchema,
    RemissionQuerySchema, RemissionSchema,
)
from registry.services.analysis import analyses
from registry.services.window import aggregates, exports
from registry.services.window.disclosure import Policy

blp = Blueprint("aggregates", __name__, url_prefix="/api/v1/aggregates",
                description="Pooled counts under disclosure control (coordinator, steward)")

CSV_ANSWER = {"type": "string", "description": "one line per count; the disclosure block is in "
                                               "the Registry-Disclosure header"}
DISCLOSURE_HEADER = {"Registry-Disclosure": {
    "description": "the disclosure block as key=value pairs separated by '; '",
    "schema": {"type": "string"}}}


def _policy() -> Policy:
    return Policy.from_config(current_app.config)


def _filters(query: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in query.items() if name not in RESERVED}


def _wants_csv(query: dict[str, Any]) -> bool:
    if query.get("format"):
        return query["format"] == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


def _csv_response(body: str, disclosure: dict[str, Any], name: str) -> Response:
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename={name}.csv",
        "Registry-Disclosure": exports.disclosure_header(disclosure)})


def counts_csv(table: dict[str, Any]) -> Response:
    """The table as CSV (services/window/exports.py, the console's CSV too)."""
    return _csv_response(exports.count_table_csv(table), table["disclosure"], "counts")


def remission_csv(table: dict[str, Any]) -> Response:
    """The life tables as CSV (services/window/exports.py)."""
    return _csv_response(exports.remission_table_csv(table), table["disclosure"], "remission")


@blp.route("/dimensions", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(JsonOnlyQuerySchema(), location="query")
@blp.response(200, CatalogueSchema)
def list_dimensions(_query: dict[str, Any]) -> Any:
    """The catalogue: the dimensions you may count by, their categories and meaning"""
    return aggregates.list_dimensions(current_caller())


def _count_table(query: dict[str, Any]) -> dict[str, Any]:
    return aggregates.count_table(current_caller(), query["rows"], query.get("columns"),
                                  _filters(query), _policy(), query.get("release"))


def _remission_table(query: dict[str, Any]) -> dict[str, Any]:
    return analyses.remission_table(
        current_caller(), query.get("by"), query["origin"], _filters(query),
        int(current_app.config["REGISTRY_MIN_REMISSION_DAYS"]), _policy(), query.get("release"))


@blp.route("/counts", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(CountsQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, CountsSchema)
@blp.alt_response(200, schema=CSV_ANSWER, content_type="text/csv", success=True,
                  headers=DISCLOSURE_HEADER,
                  description="The table; as CSV with format=csv or Accept: text/csv")
@blp.problems(409, 422)
def count_records(query: dict[str, Any]) -> Any:
    """Pooled counts by one or two dimensions, with up to two filters

    Computed from a release (`release`, default the newest). Filters are
    `<dimension>=<category>`. Counts are perturbed (cell-key method, fixed record keys) and
    small or revealing counts are withheld: null with suppressed: true. Totals are perturbed on
    their own, so cells need not add up. Asking again, in any wording, is free and gives the
    same answer. 400: unknown dimension, category, format or release (the error lists what is
    allowed); 409: no release has been cut yet; 422: the cohort has fewer than the minimum
    cell count; 429: you have asked as many distinct questions of this release as allowed."""
    table = _count_table(query)
    return counts_csv(table) if _wants_csv(query) else table


@blp.route("/counts.csv", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(CountsCsvQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, CSV_ANSWER, content_type="text/csv", headers=DISCLOSURE_HEADER,
              description="The table as CSV: one line per count, totals labelled (all)")
@blp.problems(409, 422)
def count_records_csv(query: dict[str, Any]) -> Any:
    """Pooled counts as CSV (the same question and answer as /counts)"""
    return counts_csv(_count_table(query))


@blp.route("/remission", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(RemissionQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, RemissionSchema)
@blp.alt_response(200, schema=CSV_ANSWER, content_type="text/csv", success=True,
                  headers=DISCLOSURE_HEADER,
                  description="The life tables; as CSV with format=csv or Accept: text/csv")
@blp.problems(409, 422)
def remission_table(query: dict[str, Any]) -> Any:
    """Yearly life table of sustained remission per group

    The survival analysis (GET /analyses/survival with outcome=relapse and ten fixed yearly
    intervals) in the words of this table, of a release: at risk, entered (delayed entry at
    eligibility), relapses (progression), censored and the actuarial proportion still in
    remission, from the start of remission or from the stop of trastuzumab. 400, 409, 422 and
    429 as for counts."""
    table = _remission_table(query)
    return remission_csv(table) if _wants_csv(query) else table


@blp.route("/remission.csv", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
@blp.arguments(RemissionCsvQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, CSV_ANSWER, content_type="text/csv", headers=DISCLOSURE_HEADER,
              description="The life tables as CSV: one line per interval of each group")
@blp.problems(409, 422)
def remission_table_csv(query: dict[str, Any]) -> Any:
    """Life tables of sustained remission as CSV (the same question and answer as /remission)"""
    return remission_csv(_remission_table(query))


@blp.route("/query-log", methods=["GET"])
@requires(Action.READ_QUERY_LOG)
@blp.arguments(QueryLogQuerySchema(), location="query")
@blp.response(200, QueryLogSchema)
def query_log(query: dict[str, Any]) -> Any:
    """The log of aggregate queries, newest first (steward only)"""
    return aggregates.read_query_log(current_caller(), query["limit"], query.get("before"))
