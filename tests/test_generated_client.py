"""A typed client generated from the committed openapi.yaml drives the whole API over HTTP.

openapi-python-client generates the client at test time (as a site's developer would), the app
serves on loopback from a real server thread, and every call goes through the generated client
only: each submitter operation (optional fields null and absent), a dry-run and an atomic batch,
pagination to the end, history, withdrawal, each coordinator operation in JSON and CSV, and the
error statuses. openapi-core checks every live request and answer against the same spec.
"""

from __future__ import annotations

import csv
import importlib
import io
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.media_types.util import json_loads, plain_loads
from sqlalchemy import insert, select
from werkzeug.datastructures import Headers, ImmutableMultiDict
from werkzeug.serving import make_server

from conftest import EXAMPLE_RECORD, get_database_of, migrate
from live import ROOT, own_database
from registry import create_app
from registry.db import unit_of_work
from registry.errors import PROBLEM_JSON
from registry.models import Record, Site
from registry.services.window.disclosure import Policy
from registry.services.window.releases import cut_release
from registry.services.intake.synthetic import synthetic_rows
from registry.services.access.tokens import add_site, issue_token, set_question_budget

PACKAGE = "registry_generated_client"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_BATCH = 5


# --- openapi-core adapters for httpx ----------------------------------------------------------

class _Request:
    """An httpx request as openapi-core reads it."""

    def __init__(self, request: httpx.Request) -> None:
        url = urlparse(str(request.url))
        self.host_url = f"{url.scheme}://{url.netloc}"
        self.path = url.path
        self.method = request.method.lower()
        self.body = request.content or None
        self.content_type = request.headers.get("Content-Type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qs(url.query)), header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict())


class _Response:
    """An httpx response as openapi-core reads it."""

    def __init__(self, response: httpx.Response) -> None:
        self.data = response.content
        self.status_code = response.status_code
        self.content_type = response.headers.get("Content-Type", "")
        self.headers = Headers(dict(response.headers))


class SpecChecker:
    """An httpx response hook: every answer (and its request) must agree with the spec."""

    def __init__(self, spec: dict[str, Any], base_url: str) -> None:
        # RFC 9457 problem+json is JSON, CSV is text and the template is a binary string:
        # openapi-core knows none of them by name.
        config = Config(extra_media_type_deserializers={
            PROBLEM_JSON: json_loads, "text/csv": plain_loads,
            XLSX: lambda data: data.decode("latin-1")})
        self.openapi = OpenAPI.from_dict({**spec, "servers": [{"url": base_url}]}, config=config)
        self.seen: list[tuple[str, str, int]] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        request = _Request(response.request)
        self.openapi.validate_response(request, _Response(response))
        if response.status_code < 400:  # a refused request may break the spec on purpose
            self.openapi.validate_request(request)
        self.seen.append((request.method, request.path, response.status_code))


# --- the client, the server and the data --------------------------------------------------------

def generate_client(target: Path) -> ModuleType:
    """Generate the client package from the committed openapi.yaml and import it."""
    config = target / "config.yaml"
    # The template is a binary file to the generator (it knows no spreadsheet type).
    config.write_text(f"post_hooks: []\nproject_name_override: {PACKAGE}\n"
                      f"package_name_override: {PACKAGE}\n"
                      "content_type_overrides:\n"
                      "  application/vnd.openxmlformats-officedocument.spreadsheetml.sheet:"
                      " application/octet-stream\n")
    generator = Path(sys.executable).parent / "openapi-python-client"
    done = subprocess.run(
        [str(generator), "generate", "--path", str(ROOT / "openapi.yaml"), "--meta", "none",
         "--output-path", str(target / PACKAGE), "--config", str(config)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # The generator warns about any part of the spec it could not turn into code.
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(target))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(target))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app on a database of its own, served on loopback by a real server thread; tokens of
    every role; a few hundred records of three sites for the pooled counts."""
    folder = tmp_path_factory.mktemp("generated_client")
    with own_database("genclient", folder) as url:
        migrate(url)
        app = create_app({"DATABASE_URL": url, "REGISTRY_RATE_LIMIT": "off",
                          "REGISTRY_MAX_BATCH": MAX_BATCH, "REGISTRY_QUESTION_BUDGET": 1,
                          "REGISTRY_PUBLIC_URL": "https://registry.test"})
        with app.app_context():
            for code in ("TOR", "MTL", "VAN"):
                add_site(code, f"{code} centre")
            tokens = {role: issue_token(role, "TOR" if role == "submitter" else None)[1]
                      for role in ("submitter", "coordinator", "steward")}
            # Every user may ask one question of a release (then 429), but these two were
            # granted more by a steward.
            tokens["thrifty"] = issue_token("coordinator")[1]
            for role in ("coordinator", "steward"):
                set_question_budget(tokens[role].split("_")[1], 1000)
            with unit_of_work() as session:
                ids = {site_id: code for site_id, code in session.execute(
                    select(Site.id, Site.code).where(Site.code.in_(("MTL", "VAN"))))}
                session.execute(insert(Record), synthetic_rows(random.Random(12), ids, 400))
            cut_release(None, None, Policy.from_config(app.config))  # answers come from releases
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield {"base_url": f"http://127.0.0.1:{server.server_port}", "tokens": tokens,
                   "package": generate_client(folder),
                   "spec": yaml.safe_load((ROOT / "openapi.yaml").read_text())}
        finally:
            server.shutdown()
            thread.join(timeout=10)
            get_database_of(app).engine.dispose()


def _client(served: dict[str, Any], checker: SpecChecker, role: str | None) -> Any:
    package = served["package"]
    hooks = {"event_hooks": {"response": [checker]}}
    if role is None:
        return package.Client(base_url=served["base_url"], httpx_args=hooks)
    return package.AuthenticatedClient(base_url=served["base_url"], token=served["tokens"][role],
                                       httpx_args=hooks)


def _api(package: ModuleType, name: str) -> ModuleType:
    group = name.split("_api_v1_")[1].split("_")[0]
    return importlib.import_module(f"{package.__name__}.api.{group}.{name}")


def _record(package: ModuleType, model: str, fields: dict[str, Any]) -> Any:
    return getattr(importlib.import_module(f"{package.__name__}.models"), model).from_dict(fields)


# --- the workflow -------------------------------------------------------------------------------

def test_a_generated_client_runs_the_whole_workflow(served: dict[str, Any]) -> None:
    package = served["package"]
    checker = SpecChecker(served["spec"], served["base_url"])
    submitter = _client(served, checker, "submitter")
    call = {name: _api(package, name).sync_detailed for name in (
        "put_api_v1_records_subject_id", "post_api_v1_records", "get_api_v1_records",
        "get_api_v1_records_subject_id", "get_api_v1_records_subject_id_history",
        "delete_api_v1_records_subject_id", "post_api_v1_records_batch")}
    models = importlib.import_module(f"{package.__name__}.models")
    unset = importlib.import_module(f"{package.__name__}.types").UNSET
    body = {key: value for key, value in EXAMPLE_RECORD.items() if key != "subject_id"}

    # PUT with the optional codes null: created (201), then the same again (200, unchanged).
    with_nulls = {**body, "her2_tested_on": None, "histology": None, "cause_of_death": None}
    created = call["put_api_v1_records_subject_id"](
        "TOR-genclientnulls", client=submitter,
        body=models.PutRecord.from_dict(with_nulls))
    assert created.status_code == 201, created.content
    record = created.parsed
    assert isinstance(record, models.RecordOut)
    assert record.her2_tested_on is None and record.cause_of_death is None
    assert record.version == 1 and record.derived.hr_status.value == "positive"
    again = call["put_api_v1_records_subject_id"](
        "TOR-genclientnulls", client=submitter, body=models.PutRecord.from_dict(with_nulls),
        if_match=created.headers["ETag"])
    assert again.status_code == 200 and again.parsed.version == 1

    # POST with the optional codes absent (never sent), then again: 409.
    absent = {key: value for key, value in body.items()
              if key not in ("her2_tested_on", "histology", "lesion_count")}
    posted = call["post_api_v1_records"](
        client=submitter, body=models.Record.from_dict({**absent, "subject_id": "TOR-genabsent"}))
    assert posted.status_code == 201 and posted.parsed.histology is None
    clash = call["post_api_v1_records"](
        client=submitter, body=models.Record.from_dict({**absent, "subject_id": "TOR-genabsent"}))
    assert clash.status_code == 409 and clash.parsed.code == "record_exists"

    # PUT with the optional codes absent, POST with them null: each the other way round.
    put_absent = call["put_api_v1_records_subject_id"](
        "TOR-genputabsent", client=submitter,
        body=models.PutRecord.from_dict(absent))
    assert put_absent.status_code == 201 and put_absent.parsed.lesion_count is None
    post_nulls = call["post_api_v1_records"](
        client=submitter, body=models.Record.from_dict({**with_nulls,
                                                        "subject_id": "TOR-genpostnulls"}))
    assert post_nulls.status_code == 201 and post_nulls.parsed.her2_tested_on is None

    # GET one: the stored timestamps are those the write answered; 304 while the ETag holds.
    read = call["get_api_v1_records_subject_id"]("TOR-genclientnulls", client=submitter)
    assert read.status_code == 200 and read.parsed.created_at == record.created_at
    current = call["get_api_v1_records_subject_id"](
        "TOR-genclientnulls", client=submitter, if_none_match=read.headers["ETag"])
    assert current.status_code == 304 and current.content == b""

    # Batches: a dry run, an atomic batch that fails (nothing written), one that passes.
    batch = [{**body, "subject_id": f"TOR-genbatch{letter * 4}"} for letter in "abcd"]
    batch[0] = {**with_nulls, "subject_id": batch[0]["subject_id"]}  # optional codes null
    batch[1] = {**absent, "subject_id": batch[1]["subject_id"]}  # and absent
    dry = call["post_api_v1_records_batch"](
        client=submitter, dry_run=True, body=models.BatchRequest.from_dict({"records": batch}))
    assert dry.status_code == 200 and dry.parsed.summary.created == 4
    broken = [*batch[:3], {**batch[3], "sex": "unknown_sex"}]
    failed = call["post_api_v1_records_batch"](
        client=submitter, atomic=True, body=models.BatchRequest.from_dict({"records": broken}))
    assert failed.status_code == 422
    assert [result.outcome for result in failed.parsed.results] == [
        "not_written", "not_written", "not_written", "rejected"]
    assert failed.parsed.summary.not_written == 3
    passed = call["post_api_v1_records_batch"](
        client=submitter, atomic=True, body=models.BatchRequest.from_dict({"records": batch}))
    assert passed.status_code == 200 and passed.parsed.summary.created == 4

    # Pagination to the end, and updated_since as a date.
    seen, cursor = [], unset
    while True:
        page = call["get_api_v1_records"](client=submitter, limit=2, cursor=cursor)
        assert page.status_code == 200
        seen += [item.subject_id for item in page.parsed.records]
        if page.parsed.next_cursor is None:
            break
        cursor = page.parsed.next_cursor
    assert len(seen) == len(set(seen)) == 8
    since = call["get_api_v1_records"](client=submitter, updated_since=date(2000, 1, 1))
    assert since.status_code == 200 and len(since.parsed.records) == 8

    # History, withdrawal (204, no body), and what follows it.
    history = call["get_api_v1_records_subject_id_history"]("TOR-genabsent", client=submitter)
    assert history.status_code == 200 and [v.version for v in history.parsed.versions] == [1]
    gone = call["delete_api_v1_records_subject_id"]("TOR-genabsent", client=submitter)
    assert gone.status_code == 204 and gone.content == b""
    for missing in ("get_api_v1_records_subject_id", "get_api_v1_records_subject_id_history"):
        answer = call[missing]("TOR-genabsent", client=submitter)
        assert answer.status_code == 404 and isinstance(answer.parsed, models.Problem), missing
    again = call["delete_api_v1_records_subject_id"]("TOR-genabsent", client=submitter)
    assert again.status_code == 204  # withdrawing twice is no error
    never = call["delete_api_v1_records_subject_id"]("TOR-gennotsubmitted", client=submitter)
    assert never.status_code == 404 and isinstance(never.parsed, models.Problem)
    refused = call["put_api_v1_records_subject_id"](
        "TOR-genabsent", client=submitter, body=models.PutRecord.from_dict(with_nulls))
    assert refused.status_code == 409 and refused.parsed.code == "subject_withdrawn"

    # Error statuses, each parsed as a problem.
    problems = {
        400: call["get_api_v1_records"](client=submitter, cursor="not-a-cursor"),
        401: call["get_api_v1_records"](client=_client(served, checker, None)),
        403: call["get_api_v1_records"](client=_client(served, checker, "coordinator")),
        412: call["put_api_v1_records_subject_id"](
            "TOR-genclientnulls", client=submitter, body=models.PutRecord.from_dict(with_nulls),
            if_match='"7"'),
        413: call["post_api_v1_records_batch"](
            client=submitter, body=models.BatchRequest.from_dict(
                {"records": batch + batch[:MAX_BATCH + 1 - len(batch)]})),
        # A typed client cannot leave out a required field; it can break a rule between fields.
        422: call["put_api_v1_records_subject_id"](
            "TOR-1234567", client=submitter,
            body=models.PutRecord.from_dict({**with_nulls, "vital_status": "dead"})),
    }
    for status, answer in problems.items():
        assert answer.status_code == status, (status, answer.content)
        assert isinstance(answer.parsed, models.Problem) and answer.parsed.status == status
    # The dictionary (JSON and REDCap's CSV) and the operations endpoints, checked too.
    dictionary = importlib.import_module(f"{package.__name__}.api.dictionary")
    operations = importlib.import_module(f"{package.__name__}.api.operations")
    importlib.import_module(f"{dictionary.__name__}.get_api_v1_dictionary_redcap_csv")
    for module in ("get_healthz", "get_readyz", "get_metrics"):
        importlib.import_module(f"{operations.__name__}.{module}")
    anonymous = _client(served, checker, None)
    assert importlib.import_module(f"{dictionary.__name__}.get_api_v1_dictionary").sync_detailed(
        client=submitter).parsed.version
    assert dictionary.get_api_v1_dictionary_redcap_csv.sync_detailed(
        client=submitter).content.startswith(b"Variable / Field Name,")
    template = importlib.import_module(
        f"{dictionary.__name__}.get_api_v1_dictionary_template_xlsx").sync_detailed(
        client=submitter)
    assert template.status_code == 200 and template.content.startswith(b"PK")  # a zip file
    assert operations.get_healthz.sync_detailed(client=anonymous).status_code == 200
    assert operations.get_readyz.sync_detailed(client=anonymous).parsed.status == "ready"
    assert operations.get_metrics.sync_detailed(client=anonymous).status_code == 200
    codes = {(error.field, error.code) for error in problems[422].parsed.errors}
    assert {("subject_id", "identifier_like"), ("cause_of_death", "required")} <= codes
    assert len({path for _, path, _ in checker.seen}) >= 6


def test_a_generated_client_reads_every_pooled_count_in_json_and_csv(
        served: dict[str, Any]) -> None:
    package = served["package"]
    checker = SpecChecker(served["spec"], served["base_url"])
    coordinator = _client(served, checker, "coordinator")
    steward = _client(served, checker, "steward")
    models = importlib.import_module(f"{package.__name__}.models")

    def api(name: str) -> Any:
        return _api(package, f"get_api_v1_aggregates_{name}").sync_detailed

    catalogue = api("dimensions")(client=coordinator)
    assert catalogue.status_code == 200
    assert "hr_status" in {d.name for d in catalogue.parsed.dimensions}

    counts = api("counts")(client=coordinator, rows="hr_status", columns="maintenance_status")
    assert counts.status_code == 200 and isinstance(counts.parsed, models.Counts)
    assert counts.parsed.disclosure.additive is False
    as_csv = api("counts_csv")(client=coordinator, rows="hr_status", columns="maintenance_status")
    assert as_csv.status_code == 200 and isinstance(as_csv.parsed, str)
    lines = list(csv.reader(io.StringIO(as_csv.parsed)))
    assert lines[0][:3] == ["hr_status", "maintenance_status", "count"]
    assert lines[-1][2] == str(counts.parsed.total)
    assert "additive=false" in as_csv.headers["Registry-Disclosure"]

    for origin in ("remission_start", "trastuzumab_stop"):
        table = api("remission")(client=coordinator, by="hr_status",
                                 origin=models.GetApiV1AggregatesRemissionOrigin(origin),
                                 format_=models.GetApiV1AggregatesRemissionFormat.JSON)
        assert table.status_code == 200 and isinstance(table.parsed, models.Remission)
        assert any(group.intervals[0].at_risk is not None for group in table.parsed.groups)
        table_csv = api("remission_csv")(
            client=coordinator, by="hr_status",
            origin=models.GetApiV1AggregatesRemissionCsvOrigin(origin))
        assert table_csv.status_code == 200 and table_csv.parsed.startswith("hr_status,")

    # The analyses, each in JSON and CSV: survival by a dimension, and the landmark model.
    def analysis(name: str) -> Any:
        return _api(package, f"get_api_v1_analyses_{name}").sync_detailed

    survival = analysis("survival")(
        client=coordinator, by="presentation",
        origin=models.GetApiV1AnalysesSurvivalOrigin.REMISSION_START)
    assert survival.status_code == 200 and isinstance(survival.parsed, models.Survival)
    assert {group.group for group in survival.parsed.groups} == {"de_novo", "recurrent"}
    survival_csv = analysis("survival_csv")(
        client=coordinator, by="presentation",
        origin=models.GetApiV1AnalysesSurvivalCsvOrigin.REMISSION_START)
    assert survival_csv.status_code == 200 and survival_csv.parsed.startswith("presentation,")
    landmark = {"client": coordinator, "landmark_years": 2}
    ratios = analysis("hazard_ratios")(
        origin=models.GetApiV1AnalysesHazardRatiosOrigin.LANDMARK, **landmark)
    assert ratios.status_code == 200 and isinstance(ratios.parsed, models.HazardRatios)
    assert [level.level for level in ratios.parsed.levels] == ["continuing", "stopped"]
    ratios_csv = analysis("hazard_ratios_csv")(
        origin=models.GetApiV1AnalysesHazardRatiosCsvOrigin.LANDMARK, **landmark)
    assert ratios_csv.status_code == 200 and "stopped" in ratios_csv.parsed

    # Releases: coordinators list them; a steward's cut too soon after the last is refused.
    def release_api(name: str) -> Any:
        return _api(package, f"{name}_api_v1_releases").sync_detailed

    releases = release_api("get")(client=coordinator)
    assert releases.status_code == 200 and len(releases.parsed.releases) == 1
    too_soon = release_api("post")(client=steward,
                                   body=models.ReleaseCut.from_dict({"note": "again"}))

    log = api("query_log")(client=steward, limit=2)
    assert log.status_code == 200 and len(log.parsed.entries) == 2

    thrifty = _client(served, checker, "thrifty")  # one question per release
    assert api("counts")(client=thrifty, rows="hr_status").status_code == 200
    problems = {
        400: api("counts")(client=coordinator, rows="no_such_dimension"),
        403: api("query_log")(client=coordinator),
        409: too_soon,
        422: api("counts")(client=coordinator, rows="hr_status", vital_status="dead",
                           cause_of_death="other"),
        429: api("counts")(client=thrifty, rows="presentation"),
    }
    for status, answer in problems.items():
        assert answer.status_code == status, (status, answer.content)
        assert isinstance(answer.parsed, models.Problem)
    assert problems[400].parsed.errors[0].field == "rows"
