"""Domain errors, and the one place where every error becomes RFC 9457 problem+json.

No problem body, log line or exception message carries a submitted value, a token or SQL.
"""

from __future__ import annotations

import logging
import traceback
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, json, request
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from registry.core.fields import problems_to_list

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class RegistryError(Exception):
    """Base of the errors services raise; each kind maps to one HTTP status and problem type."""

    status = 500
    slug = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra


class RecordInvalid(RegistryError):
    """One or more problems with a submitted record, each {field, code, message}."""

    status, slug, title = 422, "validation-failed", "Record failed validation"

    def __init__(self, errors: list[dict[str, str]], **extra: Any) -> None:
        noun = "problem" if len(errors) == 1 else "problems"
        super().__init__(f"{len(errors)} {noun}", errors=errors, **extra)


class BatchRejected(RegistryError):
    """An atomic batch with at least one rejected record: nothing was written."""

    status, slug, title = 422, "batch-rejected", "Batch rejected: nothing was written"


class BadRequest(RegistryError):
    """The request is malformed (query parameters, JSON syntax)."""

    status, slug, title = 400, "bad-request", "Bad request"


class MalformedJson(RegistryError):
    """The body is not JSON at all (or nested too deeply to read)."""

    status, slug, title = 400, "malformed-json", "Malformed JSON"

    def __init__(self) -> None:
        super().__init__("the request body is not valid JSON")


class Unauthenticated(RegistryError):
    """No token, or a token that is unknown, malformed or revoked."""

    status, slug, title = 401, "unauthenticated", "Authentication required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="registry"'})


class Forbidden(RegistryError):
    """A valid token whose role may not use this endpoint."""

    status, slug, title = 403, "forbidden", "Not allowed for this role"


class NotFound(RegistryError):
    """No such record for this site (also what another site's record looks like)."""

    status, slug, title = 404, "not-found", "Not found"


class Conflict(RegistryError):
    """The request clashes with what is stored (record exists, subject withdrawn)."""

    status, slug, title = 409, "conflict", "Conflict"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail, code=code)


class PreconditionFailed(RegistryError):
    """If-Match names a version that is no longer the current one."""

    status, slug, title = 412, "precondition-failed", "The record has changed since that version"


class PayloadTooLarge(RegistryError):
    """A body or batch larger than the registry accepts."""

    status, slug, title = 413, "payload-too-large", "Request too large"


class UnsupportedMediaType(RegistryError):
    """A body that is not application/json."""

    status, slug, title = 415, "unsupported-media-type", "Send application/json"


class QueryRefused(RegistryError):
    """An aggregate query disclosure control will not answer (a cohort smaller than k)."""

    status, slug, title = 422, "query-refused", "Query refused by disclosure control"


class TooManyRequests(RegistryError):
    """A limit on requests or on repeated queries was reached."""

    status, slug, title = 429, "too-many-requests", "Too many requests"


class ServiceUnavailable(RegistryError):
    """The database cannot be reached; try again shortly."""

    status, slug, title = 503, "service-unavailable", "Service temporarily unavailable"

    def __init__(self, detail: str | None = None, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


def problem_response(status: int, slug: str, title: str, detail: str | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """Build an application/problem+json response."""
    base = current_app.config.get("REGISTRY_PUBLIC_URL", "https://registry.invalid").rstrip("/")
    body: dict[str, Any] = {"type": f"{base}/problems/{slug}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _from_registry_error(error: RegistryError) -> Response:
    return problem_response(error.status, error.slug, error.title, error.detail, error.headers,
                            **error.extra)


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not allowed for this role"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    412: ("precondition-failed", "Precondition failed"),
    413: ("payload-too-large", "Request too large"),
    415: ("unsupported-media-type", "Send application/json"),
    422: ("validation-failed", "Request failed validation"),
    428: ("precondition-required", "Precondition required"),
    429: ("too-many-requests", "Too many requests"),
}


def _from_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    slug, title = _HTTP_SLUGS.get(status, ("http-error", HTTPStatus(status).phrase))
    data = getattr(error, "data", None) or {}
    headers = dict(data.get("headers") or {})
    if getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)
    messages = data.get("messages")
    if messages is not None:
        # webargs wraps errors by location: {"json": {...}, "query": {...}}
        errors: list[dict[str, str]] = []
        for location, located in messages.items():
            for problem in problems_to_list(located):
                if location != "json" and problem["field"] == "(body)":
                    problem["field"] = f"({location})"
                errors.append(problem)
        noun = "problem" if len(errors) == 1 else "problems"
        title = "Record failed validation" if "json" in messages else "Invalid parameters"
        return problem_response(status, slug if status != 422 else "validation-failed", title,
                                f"{len(errors)} {noun}", headers, errors=errors)
    detail = None if status == 500 else error.description
    if status == 413:
        detail = "the request body is larger than the registry accepts"
    return problem_response(status, slug, title, detail, headers)


def _database_unavailable(error: Exception) -> Response:
    # Only the class name: a driver message may quote SQL.
    log.warning("database unavailable", extra={"error_class": type(error).__name__})
    return _from_registry_error(ServiceUnavailable(
        "the registry's database is unavailable; retry after the number of seconds in "
        "Retry-After"))


def _is_connection_error(error: Exception) -> bool:
    if isinstance(error, (OperationalError, InterfaceError, PoolTimeoutError)):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def _unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return _from_http_exception(error)
    if _is_connection_error(error):
        return _database_unavailable(error)
    if isinstance(error, DataError):  # e.g. a NUL character, which PostgreSQL cannot store
        return problem_response(400, "bad-request", "Bad request",
                                "the request holds a value the registry cannot store")
    # The stack names code lines only: the exception's message may hold a value, so it is left out.
    log.error("unhandled error", extra={
        "error_class": type(error).__name__,
        "route": request.url_rule.rule if request.url_rule else None,
        "stack": "".join(traceback.format_tb(error.__traceback__)),
    })
    return problem_response(500, "internal-error", "Internal error",
                            "the registry could not complete the request; it has been logged")


def register_error_handlers(app: Flask) -> None:
    """Route every error of the app to problem+json."""
    app.register_error_handler(RegistryError, _from_registry_error)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(Exception, _unexpected)
