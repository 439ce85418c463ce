"""Pooled counts for coordinators and stewards: catalogue, counts, remission, query log."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from marshmallow import INCLUDE

from registry.api import Blueprint
from registry.auth import current_caller, requires
from registry.schemas.aggregates import (
    RESERVED, CatalogueSchema, CountsQuerySchema, CountsSchema, QueryLogQuerySchema,
    QueryLogSchema, RemissionQuerySchema, RemissionSchema,
)
from registry.services import aggregates
from registry.services.disclosure import Policy
from registry.services.exports import count_table_csv, disclosure_header

blp = Blueprint("aggregates", __name__, url_prefix="/api/v1/aggregates",
                description="Pooled counts under disclosure control (coordinator, steward)")


def _policy() -> Policy:
    return Policy.from_config(current_app.config)


def _filters(query: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in query.items() if name not in RESERVED}


def _wants_csv(query: dict[str, Any]) -> bool:
    if query.get("format"):
        return query["format"] == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


def _csv(table: dict[str, Any]) -> Response:
    """The table as CSV (services/exports.py); the disclosure block in a header."""
    headers = {"Content-Disposition": "attachment; filename=counts.csv",
               "Registry-Disclosure": disclosure_header(table["disclosure"])}
    return Response(count_table_csv(table), mimetype="text/csv", headers=headers)


@blp.route("/dimensions", methods=["GET"])
@requires("coordinator", "steward")
@blp.response(200, CatalogueSchema)
def list_dimensions() -> Any:
    """The catalogue: the dimensions you may count by, their categories and meaning"""
    return aggregates.list_dimensions(current_caller())


@blp.route("/counts", methods=["GET"])
@requires("coordinator", "steward")
@blp.arguments(CountsQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, CountsSchema)
@blp.alt_response(200, schema={"type": "string"}, content_type="text/csv", success=True,
                  description="The table; as CSV with format=csv or Accept: text/csv")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
@blp.alt_response(429, response="TOO_MANY_REQUESTS")
def count_records(query: dict[str, Any]) -> Any:
    """Pooled counts by one or two dimensions, with up to two filters

    Filters are `<dimension>=<category>`. Counts are perturbed (cell-key method) and small or
    revealing counts are withheld: null with suppressed: true. Totals are perturbed on their
    own, so cells need not add up. 400: unknown dimension or category (the error lists the
    allowed values); 422: the cohort is smaller than the minimum cell count; 429: this query
    was asked too often by this token in 30 days."""
    table = aggregates.count_table(current_caller(), query["rows"], query["columns"],
                                   _filters(query), _policy())
    return _csv(table) if _wants_csv(query) else table


@blp.route("/remission", methods=["GET"])
@requires("coordinator", "steward")
@blp.arguments(RemissionQuerySchema(), location="query", unknown=INCLUDE)
@blp.response(200, RemissionSchema)
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
@blp.alt_response(429, response="TOO_MANY_REQUESTS")
def remission_table(query: dict[str, Any]) -> Any:
    """Yearly life table of sustained remission per group

    At risk, relapses (progression), censored and the actuarial proportion still in remission,
    from the start of remission or from the stop of trastuzumab. Intervals with small counts
    are merged with the next. 422 and 429 as for counts."""
    return aggregates.remission_table(current_caller(), query["by"], query["origin"],
                                      _filters(query), _policy())


@blp.route("/query-log", methods=["GET"])
@requires("steward")
@blp.arguments(QueryLogQuerySchema(), location="query")
@blp.response(200, QueryLogSchema)
def query_log(query: dict[str, Any]) -> Any:
    """The log of aggregate queries, newest first (steward only)"""
    return aggregates.read_query_log(current_caller(), query["limit"], query["before"])
