"""Pooled counts for coordinators and stewards: catalogue, counts, remission, query log."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Response, current_app, request
from marshmallow import INCLUDE

from registry.api import Blueprint
from registry.auth import current_caller, requires
from registry.schemas.aggregates import (
    RESERVED, CatalogueSchema, CountsQuerySchema, CountsSchema, QueryLogQuerySchema,
    QueryLogSchema, RemissionQuerySchema, RemissionSchema,
)
from registry.services import aggregates, analyses
from registry.services.disclosure import Policy

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
    """The table as CSV: one line per count, totals labelled (all); disclosure in headers."""
    dims = [table["rows"]] + ([table["columns"]] if table["columns"] else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*dims, "count", "suppressed"])
    lines = table["cells"] + table["row_totals"] + table["column_totals"] + [
        {"count": table["total"], **({"suppressed": True} if table["total"] is None else {})}]
    for line in lines:
        writer.writerow([line.get(d, "(all)") for d in dims]
                        + ["" if line["count"] is None else line["count"],
                           "true" if line.get("suppressed") else "false"])
    disclosure = table["disclosure"]
    sites = disclosure["contributing_sites"]
    headers = {"Content-Disposition": "attachment; filename=counts.csv",
               "Registry-Disclosure": (
                   f"min_cell_count={disclosure['min_cell_count']}; "
                   f"method={','.join(disclosure['method'])}; snapshot={disclosure['snapshot']}; "
                   f"contributing_sites={'' if sites is None else sites}")}
    return Response(out.getvalue(), mimetype="text/csv", headers=headers)


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

    The survival analysis (GET /analyses/survival with outcome=relapse and ten closed yearly
    intervals) in the words of this table: at risk, entered (delayed entry at eligibility),
    relapses (progression), censored and the actuarial proportion still in remission, from
    the start of remission or from the stop of trastuzumab. 422 and 429 as for counts."""
    return analyses.remission_table(
        current_caller(), query["by"], query["origin"], _filters(query),
        int(current_app.config["REGISTRY_MIN_REMISSION_DAYS"]), _policy())


@blp.route("/query-log", methods=["GET"])
@requires("steward")
@blp.arguments(QueryLogQuerySchema(), location="query")
@blp.response(200, QueryLogSchema)
def query_log(query: dict[str, Any]) -> Any:
    """The log of aggregate queries, newest first (steward only)"""
    return aggregates.read_query_log(current_caller(), query["limit"], query["before"])
