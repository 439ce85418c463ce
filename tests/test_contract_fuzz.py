"""Contract: schemathesis drives every operation of the committed openapi.yaml, as each role and
without a token, with data that fits the spec and data that does not. No 5xx, and every answer
conforms to the spec (status, content type, headers, body). New operations are covered as soon as
they are in openapi.yaml.

It runs on a database of its own (schemathesis commits what it writes), with rate limiting off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import PositiveDataAcceptanceConfig

from conftest import EXAMPLE_RECORD, get_database_of, migrate
from live import ROOT, own_database
from registry import create_app
from registry.services.access.tokens import add_site, issue_token

ROLES = ("submitter", "coordinator", "steward", "no token")
# Examples per operation, role and mode: enough to walk each operation's edges in CI time.
MAX_EXAMPLES = int(os.environ.get("REGISTRY_FUZZ_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def contract_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, dict]]:
    """An app on a migrated database of its own, a site with a record, a token per role."""
    with own_database("contract", tmp_path_factory.mktemp("contract")) as url:
        migrate(url)
        app = create_app({"DATABASE_URL": url, "TESTING": True, "REGISTRY_RATE_LIMIT": "off",
                          "REGISTRY_PUBLIC_URL": "https://registry.test"})
        with app.app_context():
            add_site("TOR", "Toronto")
            headers = {role: {"Authorization": "Bearer " + issue_token(
                role, "TOR" if role == "submitter" else None)[1]} for role in ROLES[:3]}
        headers["no token"] = {}
        subject = dict(EXAMPLE_RECORD)
        client = app.test_client()
        assert client.post("/api/v1/records", json=subject,
                           headers=headers["submitter"]).status_code == 201
        yield app, headers
        get_database_of(app).engine.dispose()


def _contract(app: Flask):  # noqa: ANN202
    """The committed contract, bound to the app under test."""
    schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
    schema.app = app
    # Tokens are set per role below; schemathesis probes missing and bad tokens itself.
    schema.config.generation.update(with_security_parameters=False)
    # Data that fits the spec may still be refused for reasons OpenAPI cannot express: an opaque
    # cursor the registry never gave out (400), the role (401/403), what is stored (404, 409,
    # 412) and the cross-field rules of record.md (422).
    schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
        expected_statuses=["2xx", "400", "401", "403", "404", "409", "412", "422"])
    return schema


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["fitting", "breaking"])
def test_every_operation_conforms(contract_app, role, mode) -> None:  # noqa: ANN001
    app, headers = contract_app
    schema = _contract(app)
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    expected = {f"{method.upper()} {path}" for path, item in spec["paths"].items()
                for method in item if method != "parameters"}
    tried: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        tried[label] = 0

        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case) -> None:  # noqa: ANN001
            # Passed to the call (not put in the case): schemathesis knows them as the real
            # credentials, and checks that the operation refuses a request without them.
            case.call_and_validate(headers=headers[role])
            tried[label] += 1

        try:
            call()
        except Unsatisfiable:
            pass  # nothing can break the spec of this operation (e.g. no parameters)
    assert set(tried) == expected
    print(f"\n{role}/{mode.value}: {len(tried)} operations, {sum(tried.values())} requests",
          tried)
