"""Liveness and readiness, for load balancers and orchestrators (no token)."""

from __future__ import annotations

from typing import Any

from flask import Response

from registry.api import Blueprint
from registry.auth import public
from registry.observability import metrics_exposition
from registry.schemas.api import HealthSchema
from registry.services.health import readiness

blp = Blueprint("operations", __name__, url_prefix="", description="Health of the service")


@blp.route("/healthz", methods=["GET"])
@public
@blp.doc(security=[])
@blp.response(200, HealthSchema)
def healthz() -> Any:
    """The process answers (no database involved)"""
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
@public
@blp.doc(security=[])
@blp.response(200, HealthSchema)
@blp.problems(503)
def readyz() -> Any:
    """The database answers and its schema is at the newest migration

    503 (a problem, with Retry-After) when the database does not answer or is not migrated."""
    return readiness()


@blp.route("/metrics", methods=["GET"])
@public
@blp.doc(security=[], responses={"200": {
    "description": "Prometheus text exposition: requests by route template and status, their "
                   "latency, records by path and outcome. Serve it to the monitoring network "
                   "only (see README).",
    "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics() -> Any:
    """Prometheus metrics of the service (no record data)"""
    body, content_type = metrics_exposition()
    return Response(body, content_type=content_type)
