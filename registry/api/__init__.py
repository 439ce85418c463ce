"""HTTP layer: flask-smorest blueprints that parse, call one service and return.

This module sets up the Api (OpenAPI generation, problem+json error responses in the spec, the
JSON parser) and registers the blueprints.
"""

from __future__ import annotations

import http
import json
from typing import Any

from flask import Flask, request
from flask_smorest import Api
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest.utils import prepare_response
from flask_swagger_ui import get_swaggerui_blueprint
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge

from registry.errors import PROBLEM_JSON, BadRequest, UnsupportedMediaType
from registry.schemas.identifiers import printable_field_name
from registry.schemas.api import ProblemSchema, batch_items_property

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


class DuplicateKey(ValueError):
    """A JSON object that names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__("duplicate key")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: the object as a dict, unless a key repeats (which JSON parsers settle
    differently: Python keeps the last value, others the first)."""
    built = dict(pairs)
    if len(built) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return built


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
            return json.loads(data, object_pairs_hook=unique_keys)
        except DuplicateKey as duplicate:
            name = printable_field_name(duplicate.key)
            raise BadRequest("the body names a key more than once; send each key once",
                             errors=[{"field": name, "code": "duplicate_key",
                                      "message": "appears more than once in one JSON object"}]
                             ) from None
        except (ValueError, RecursionError) as error:
            return self._handle_invalid_json_error(error, req)


class Blueprint(SmorestBlueprint):
    """A flask-smorest blueprint with the registry's parser; its API operations document the
    429 of the rate limit (registry.ratelimit)."""

    ARGUMENTS_PARSER = RegistryParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if (self.url_prefix or "").startswith(API_PREFIX):
            self._prepare_doc_cbks.insert(0, self._document_rate_limit)

    @staticmethod
    def _document_rate_limit(doc: dict[str, Any], doc_info: dict[str, Any],
                             **_kwargs: Any) -> dict[str, Any]:
        responses = doc_info.setdefault("response", {}).setdefault("responses", {})
        responses.setdefault(429, []).append(http.HTTPStatus.TOO_MANY_REQUESTS.name)
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


def require_json_body() -> None:
    """before_request: a body sent to the API must be application/json (415 otherwise)."""
    if request.method in JSON_METHODS and request.path.startswith(API_PREFIX) \
            and not core.is_json(request.mimetype):
        raise UnsupportedMediaType("send the body as application/json")


def api_settings(version: str) -> dict[str, Any]:
    """Flask config keys of flask-smorest."""
    return {
        "API_TITLE": "HER2+ MBC prolonged-remission registry",
        "API_VERSION": version,
        "OPENAPI_VERSION": "3.0.3",
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
    from registry.api import aggregates, analyses, dictionary, operations, records

    api = RegistryApi(app)
    api.ma_plugin.converter.add_attribute_function(batch_items_property)
    for module in (records, dictionary, operations, aggregates, analyses):
        api.register_blueprint(module.blp)
    app.register_blueprint(get_swaggerui_blueprint(
        "/docs", f"{API_PREFIX}/openapi.json",
        config={"app_name": "HER2+ MBC registry API", "persistAuthorization": False}))
    app.before_request(require_json_body)
    return api
