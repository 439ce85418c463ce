"""The committed openapi.yaml is what the code generates, is valid, and documents every route."""

from pathlib import Path

import yaml
from flask import Flask
from openapi_spec_validator import validate

from registry.cli import openapi_text

ROOT = Path(__file__).resolve().parents[1]
# Routes that are not part of the API contract: the docs page and its assets, the spec itself.
UNDOCUMENTED = ("/docs", "/api/v1/openapi.json", "/static/")
CONSOLE = "console."  # the web console's pages are for people, not part of the API contract


def test_committed_openapi_matches_the_code(app: Flask) -> None:
    committed = (ROOT / "openapi.yaml").read_text()
    assert committed == openapi_text(), (
        "openapi.yaml is stale: run `registry openapi write openapi.yaml` and commit it")


def test_openapi_is_a_valid_openapi_3_document(app: Flask) -> None:
    validate(yaml.safe_load(openapi_text()))


def test_every_route_is_documented(app: Flask) -> None:
    spec = yaml.safe_load(openapi_text())
    documented = {(path, method) for path, operations in spec["paths"].items()
                  for method in operations if method != "parameters"}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(UNDOCUMENTED) or rule.endpoint.startswith(CONSOLE):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {rule.rule} is undocumented"


def test_errors_are_documented_as_problem_json(app: Flask) -> None:
    spec = yaml.safe_load(openapi_text())
    for name in ("UNPROCESSABLE_ENTITY", "DEFAULT_ERROR"):
        assert "application/problem+json" in spec["components"]["responses"][name]["content"]


def test_no_parameter_is_documented_as_nullable(app: Flask) -> None:
    """A query string or header cannot carry null: a parameter typed "or null" makes a typed
    client offer None for it, which it can only send as the text "None"."""
    spec = yaml.safe_load(openapi_text())
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            shared = method == "parameters"  # the parameters every operation of the path takes
            for parameter in operation if shared else operation.get("parameters", []):
                schema = parameter["schema"]
                types = schema.get("type", [])
                assert "null" not in (types if isinstance(types, list) else [types]), (
                    method, path, parameter["name"])
                assert "default" not in schema or schema["default"] is not None, (
                    method, path, parameter["name"])
