"""HTTP layer: flask-smorest blueprints that parse, call one service and return.

This module sets up the Api (OpenAPI generation, problem+json error responses in the spec, the
JSON parser) and registers the blueprints.
"""

from __future__ import annotations

import http
from typing import Any

from flask import Flask, Response, request
from flask_smorest import Api
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest.utils import prepare_response
from flask_swagger_ui import get_swaggerui_blueprint
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge

from registry.errors import PROBLEM_JSON, MalformedJson, UnsupportedMediaType
from registry.jsonbody import load_json_body
from registry.schemas.api import (
    ProblemSchema, batch_items_property, code_list_property, nullable_enum_property,
)

API_PREFIX = "/api/v1"
JSON_METHODS = ("POST", "PUT", "PATCH")


_RETRY_AFTER = {"description": "seconds to wait before trying again",
                "schema": {"type": "integer"}}
_STATUS_HEADERS: dict[int, dict[str, Any]] = {
    429: {"Retry-After": _RETRY_AFTER,
          "X-RateLimit-Limit": {"description": "requests allowed in the window",
                                "schema": {"type": "integer"}},
          "X-RateLimit-Remaining": {"description": "requests left in the window",
                                    "schema": {"type": "integer"}},
          "X-RateLimit-Reset": {"description": "when the window ends (Unix time)",
                                "schema": {"type": "integer"}}},
    503: {"Retry-After": _RETRY_AFTER},
}


class RegistryParser(FlaskParser):
    """webargs parser that turns over-deep JSON into a 400, not a crash, and refuses a body
    that names a key twice (an ambiguous clinical record), naming the key, never its values."""

    def _raw_load_json(self, req: Any) -> Any:
        if not core.is_json(req.mimetype):
            return core.missing
        data = req.get_data(cache=True)
        # A streamed (chunked) body is cut at the limit without an error: refuse it instead of
        # parsing the first part. Bodies with a Content-Length over it never get this far.
        if req.content_length is None and req.max_content_length is not None \
                and len(data) >= req.max_content_length:
            raise RequestEntityTooLarge()
        try:
            return load_json_body(data)
        except (ValueError, RecursionError):
            raise MalformedJson() from None


# Every operation of the API may answer these (token, role, rate limit, database down).
API_PROBLEMS = (401, 403, 429, 503)
# ...and these when it takes a JSON body (malformed, too large, not JSON, failing its rules).
BODY_PROBLEMS = (400, 413, 415, 422)


class Blueprint(SmorestBlueprint):
    """A flask-smorest blueprint with the registry's parser. Its operations document every
    error status they may answer, each with the problem schema: those of every API operation,
    those of a JSON body or of parameters, and the ones a view names with `problems()`."""

    ARGUMENTS_PARSER = RegistryParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.insert(0, self._document_problems)
        self._prepare_doc_cbks.append(self._sort_responses)

    def arguments(self, schema: Any, *, location: str = "json", **kwargs: Any) -> Any:
        """As flask-smorest's, but a bad query parameter or header answers 400 (a malformed
        request); only a body that breaks its rules answers 422."""
        if location not in ("json", "form", "files"):
            kwargs.setdefault("error_status_code", 400)
        return super().arguments(schema, location=location, **kwargs)

    def problems(self, *statuses: int) -> Any:
        """Document further error statuses of an operation (404, 409, 412...)."""

        def decorator(view: Any) -> Any:
            for status in statuses:
                view = self.alt_response(status, response=http.HTTPStatus(status).name)(view)
            return view

        return decorator

    @staticmethod
    def _sort_responses(doc: dict[str, Any], _doc_info: dict[str, Any],
                        **_kwargs: Any) -> dict[str, Any]:
        """Responses in the order of their status (default last), for the reader."""
        if "responses" in doc:
            doc["responses"] = dict(sorted(doc["responses"].items(),
                                           key=lambda item: str(item[0]).replace("d", "9")))
        return doc

    def json_body(self, schema: Any) -> Any:
        """Document `schema` as the operation's JSON body without parsing it here: the view
        hands the body as sent (json_body()) to a service that checks it with everything
        else the request names, so that one answer lists every problem."""

        def decorator(view: Any) -> Any:
            view = self.doc(requestBody={"required": True, "content": {
                "application/json": {"schema": schema}}})(view)
            return self.problems(*BODY_PROBLEMS)(view)

        return decorator

    def _document_problems(self, doc: dict[str, Any], doc_info: dict[str, Any],
                           **_kwargs: Any) -> dict[str, Any]:
        responses = doc_info.setdefault("response", {}).setdefault("responses", {})
        statuses: set[int] = set()
        if (self.url_prefix or "").startswith(API_PREFIX):
            statuses.update(API_PROBLEMS)
        locations = {parameter["in"] for parameter in
                     doc_info.get("arguments", {}).get("parameters", [])}
        if "json" in locations:
            statuses.update(BODY_PROBLEMS)
        if locations - {"json"}:
            statuses.add(400)
        for status in sorted(statuses):
            if status not in responses and \
                    status not in doc_info.get("arguments", {}).get("responses", {}):
                responses[status] = [http.HTTPStatus(status).name]
        return doc


class RegistryApi(Api):
    """flask-smorest Api whose documented errors are RFC 9457 problem+json."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status in _STATUS_HEADERS:
                response["headers"] = _STATUS_HEADERS[status]
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                prepare_response(response, self.spec, PROBLEM_JSON)
            else:
                prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)

    def _register_error_handlers(self) -> None:
        """Errors are handled by registry.errors, not by flask-smorest's JSON handler."""


def json_body() -> Any:
    """The request's JSON body as sent (refused with 400 when it is not JSON)."""
    return Blueprint.ARGUMENTS_PARSER.load_json(request, None)


def no_content() -> Response:
    """A 204 answer: no body, hence no Content-Type."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def require_json_body() -> None:
    """before_request: a body sent to the API must be application/json (415 otherwise)."""
    current = request._get_current_object()  # once: each use of the proxy looks it up again
    if current.method in JSON_METHODS and current.path.startswith(API_PREFIX) \
            and not core.is_json(current.mimetype):
        raise UnsupportedMediaType("send the body as application/json")


def api_settings(version: str) -> dict[str, Any]:
    """Flask config keys of flask-smorest."""
    return {
        "API_TITLE": "HER2+ MBC prolonged-remission registry",
        "API_VERSION": version,
        "OPENAPI_VERSION": "3.1.0",
        "OPENAPI_URL_PREFIX": API_PREFIX,
        "OPENAPI_JSON_PATH": "openapi.json",
        "API_SPEC_OPTIONS": {
            "info": {"description": (
                "De-identified records of HER2-positive metastatic breast cancer patients in "
                "prolonged remission on or after trastuzumab, submitted by partner sites; "
                "pooled counts for study coordinators. Errors are RFC 9457 problem+json.")},
            "servers": [{"url": "/"}],
            "components": {"securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "a token issued with `registry tokens issue`"}}},
            "security": [{"bearerAuth": []}],
        },
    }


def init_app(app: Flask) -> RegistryApi:
    """Create the Api, register every blueprint and the docs page."""
    from registry.api import aggregates, analyses, dictionary, operations, records, releases

    api = RegistryApi(app)
    api.ma_plugin.converter.add_attribute_function(batch_items_property)
    api.ma_plugin.converter.add_attribute_function(code_list_property)
    api.ma_plugin.converter.add_attribute_function(nullable_enum_property)
    for module in (records, dictionary, operations, aggregates, analyses, releases):
        api.register_blueprint(module.blp)
    app.register_blueprint(get_swaggerui_blueprint(
        "/docs", f"{API_PREFIX}/openapi.json",
        # A path, not the page's own URL: that would repeat the Host header a client chose.
        config={"app_name": "HER2+ MBC registry API", "persistAuthorization": False,
                "oauth2RedirectUrl": "/docs/oauth2-redirect.html"}))
    app.before_request(require_json_body)
    return api
