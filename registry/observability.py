"""Operations: a request id on every request, structured JSON logs, Prometheus metrics.

The request id is the server's own unless a client (or nginx) sent one of a strict random shape
that passes the identifier firewall; no other value a client chose is echoed or logged.

A request is logged as one line: method, route template (never the raw path, which holds subject
ids), status, duration, token id and role. Bodies, tokens, query strings and record values are
never logged.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Request, Response, g, has_request_context, request
from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest,
    multiprocess,
)
from pythonjsonlogger.json import JsonFormatter
from werkzeug.utils import redirect

from registry.core.identifiers import passes_firewall

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept only in a random shape: 32 hex digits (nginx's $request_id) or
# the registry's own 32 letters a..p, and only when it passes the identifier firewall (which
# refuses, e.g., a run of 6 digits). Anything else is replaced, never echoed and never logged.
REQUEST_ID_SHAPE = re.compile(r"[0-9a-p]{32}")
_HEX_AS_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
log = logging.getLogger("registry.requests")

HTTP_REQUESTS = Counter("registry_http_requests_total", "HTTP requests answered",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("registry_http_request_duration_seconds",
                         "Time to answer an HTTP request", ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RECORD_OUTCOMES = Counter("registry_records_total",
                          "Submitted records by path (put, post, batch) and outcome",
                          ["via", "outcome"])


def count_records(via: str, outcomes: dict[str, int]) -> None:
    """Add the outcomes of written (or rejected) records to the metrics."""
    for outcome, number in outcomes.items():
        if number:
            RECORD_OUTCOMES.labels(via=via, outcome=outcome).inc(number)


def metrics_exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition: of every gunicorn worker when PROMETHEUS_MULTIPROC_DIR is
    set (multiprocess mode), else of this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


class RequestContextFilter(logging.Filter):
    """Adds the request id to every log record made while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach request_id (or None outside a request)."""
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id") if has_request_context() else None
        return True


def json_formatter() -> logging.Formatter:
    """The registry's log format: one JSON object per line, UTC timestamps."""
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level",
                                        "name": "logger"},
                         datefmt="%Y-%m-%dT%H:%M:%S%z")


def configure_logging(level: str) -> None:
    """Send the registry's logs to standard error as JSON lines, unless the root logger already
    has handlers (gunicorn's config gives it a JSON one; pytest captures)."""
    logger = logging.getLogger("registry")
    logger.setLevel(level.upper())
    if logging.getLogger().handlers:
        return
    if not any(getattr(handler, "_registry", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(json_formatter())
        handler.addFilter(RequestContextFilter())
        handler._registry = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def new_request_id() -> str:
    """A fresh request id: 128 random bits as 32 letters a..p (no digit, so never identifier-
    shaped)."""
    return secrets.token_hex(16).translate(_HEX_AS_LETTERS)


def accepted_request_id(sent: str | None) -> str | None:
    """A client's request id if it has the strict random shape and passes the firewall."""
    if sent is not None and REQUEST_ID_SHAPE.fullmatch(sent) and passes_firewall(sent):
        return sent
    return None


def start_request() -> None:
    """before_request (first of all): the request id and the start time."""
    state = g._get_current_object()  # once: each use of a proxy looks it up again
    # Under the test client several requests share one app context, hence one `g`.
    state.pop("caller", None)
    state.request_id = accepted_request_id(request.headers.get(REQUEST_ID_HEADER)) \
        or new_request_id()
    state.request_started = time.perf_counter()


def route_template(current: Request) -> str:
    """The URL rule that matched (e.g. /api/v1/records/<subject_id>), never the raw path."""
    rule = current.url_rule
    return rule.rule if rule is not None else "(unmatched)"


def finish_request(response: Response) -> Response:
    """after_request: echo the request id, count and time the request, log one line."""
    state, current = g._get_current_object(), request._get_current_object()
    request_id = state.get("request_id") or new_request_id()
    response.headers[REQUEST_ID_HEADER] = request_id
    _drop_sent_host(response, current)
    duration = time.perf_counter() - state.get("request_started", time.perf_counter())
    method = current.method if current.method in _METHODS else "OTHER"
    route = route_template(current)
    HTTP_REQUESTS.labels(method=method, route=route, status=str(response.status_code)).inc()
    HTTP_LATENCY.labels(method=method, route=route).observe(duration)
    if log.isEnabledFor(logging.INFO):  # the line's fields are built only to be logged
        caller = state.get("caller")
        fields: dict[str, Any] = {
            "request_id": request_id, "method": method, "route": route,
            "status": response.status_code, "duration_ms": round(duration * 1000, 2),
            "token": getattr(caller, "public_id", None), "role": getattr(caller, "role", None),
        }
        log.info("request", extra=fields)
    return response


def _drop_sent_host(response: Response, current: Request) -> None:
    """A redirect to this server names a path only: Werkzeug's own (a missing final slash) names
    the Host header, which the client chose."""
    location = response.headers.get("Location")
    if location is None:
        return
    target = urlsplit(location)
    if target.netloc and target.netloc == current.host:
        path = urlunsplit(("", "", target.path or "/", target.query, target.fragment))
        response.headers["Location"] = path
        if response.mimetype == "text/html":  # Werkzeug's page links to the target too
            response.set_data(redirect(path, response.status_code).get_data())


def init_app(app: Flask) -> None:
    """Install logging, the request id and the metrics hooks. Call before any other hook."""
    configure_logging(app.config["REGISTRY_LOG_LEVEL"])
    app.before_request(start_request)
    app.after_request(finish_request)
