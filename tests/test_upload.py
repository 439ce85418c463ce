"""The upload page's server side (issue 17): the description of the site-side fields comes from
the one schema and is what registry-submit converts by; the console's JSON endpoints sit behind
the session and its CSRF header; writes from a spreadsheet are recorded as such.

The page itself, and the proof that it sends registry-submit's very bytes, are in
tests/test_upload_browser.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from registry.core import deidentify, identifiers, site_fields
from registry.core.fields import WholeNumber
from registry.core.record import RecordFieldsSchema
from registry.core.redcap_dictionary import redcap_fields, site_columns
from registry.core.site_fields import site_fields_description
from registry.core.template import template_columns
from registry.site.redcap.config import DATE_ORDERS, SubmitConfig
from registry.site.submit import run, spreadsheet
from conftest import EXAMPLE_RECORD
from test_console import sign_in

URL = "/api/v1/records"


@pytest.fixture()
def extra_field() -> Iterator[str]:
    """A field added to the record schema, as a developer adds one (and taken away after)."""
    name = "scan_day"
    RecordFieldsSchema._declared_fields[name] = WholeNumber(-36500, 36500, load_default=None,
                                                            allow_none=True)
    redcap_fields.cache_clear()
    try:
        yield name
    finally:
        del RecordFieldsSchema._declared_fields[name]
        redcap_fields.cache_clear()


def test_the_description_follows_the_schema(extra_field):
    described = site_fields_description()
    [added] = [field for field in described["fields"] if field["registry_name"] == extra_field]
    assert added == {"name": "scan_date", "registry_name": "scan_day", "form": "follow_up",
                     "kind": "date", "required": False}
    assert {"name": "scan_date", "kind": "date"} in described["columns"]
    # the template, the description and registry-submit's reader list the same columns
    assert "scan_date" in [column for column, _ in template_columns()]
    assert site_columns()["scan_date"] == "date"


def test_the_description_lists_every_site_side_field_and_rule():
    described = site_fields_description(max_batch=100)
    assert [field["name"] for field in described["fields"]] == \
        [spec.name for spec in redcap_fields()]
    assert [column["name"] for column in described["columns"]] == list(site_columns())
    her2 = next(field for field in described["fields"] if field["name"] == "her2_ihc")
    assert {"code": "3plus", "value": "3+", "label": "3+"} in her2["codes"]
    assert described["day_zero"] == {**described["day_zero"], "column": "met_dx_date",
                                     "becomes": "met_dx_year"}
    assert described["pseudonym"]["letters"] == deidentify.SUBJECT_HASH_LETTERS
    assert described["batch_size"] == 100
    assert described["source"] == "spreadsheet"
    # the JavaScript holds no field of its own: no site-side column is named in it
    script = (site_fields.__file__.replace("core/site_fields.py", "web/static/upload.js"))
    with open(script) as handle:
        text = handle.read()
    named = [spec.name for spec in redcap_fields() if re.search(rf"\b{spec.name}\b", text)]
    assert named == []


def test_registry_submit_converts_by_the_same_core():
    """registry-submit reads dates, pseudonyms, sources and batch sizes from what the server
    publishes: the same objects, not copies."""
    assert spreadsheet.normalise_date is site_fields.normalise_date
    assert run.SOURCE == site_fields.SOURCE == "spreadsheet"
    assert SubmitConfig().push_batch_size == site_fields.PUSH_BATCH_SIZE
    assert DATE_ORDERS is site_fields.DATE_ORDERS
    described = site_fields_description()
    assert described["dates"]["serial"] == site_fields.SERIAL_DATE.pattern
    assert described["integer"] == deidentify.INTEGER_PATTERN.pattern
    assert set(described["identifier_names"]["short_words"]) == identifiers.SHORT_NAME_WORDS
    for name, expected in (("patient_name", True), ("MRN", True), ("site_notes", False)):
        assert identifiers.is_identifier_field_name(name) is expected
    # The letters encoding the page reimplements with WebCrypto, spelled out once here:
    digest = "0123456789abcdef" * 4
    letters = "".join(described["pseudonym"]["alphabet"][int(c, 16)] for c in digest)
    assert letters[:16] == "abcdefghijklmnop"


def _signed_in(client: FlaskClient, token: str) -> str:
    """Sign in; the CSRF token of the upload page."""
    sign_in(client, token)
    page = client.get("/upload")
    assert page.status_code == 200
    return re.search(r'data-csrf="([^"]+)"', page.get_data(as_text=True)).group(1)


def _batch(subject: str, example_record: dict[str, Any]) -> dict[str, Any]:
    return {"records": [{**example_record, "subject_id": subject}]}


def test_the_page_reads_the_description_and_the_template(client, make_site, make_token):
    make_site("TOR")
    token = make_token("submitter", "TOR")["Authorization"].split()[1]
    _signed_in(client, token)
    assert client.get("/upload/site-fields.json").json == site_fields_description(1000)
    template = client.get("/upload/template.xlsx")
    assert template.status_code == 200 and template.data[:2] == b"PK"


def test_batches_need_the_session_and_its_csrf_header(client, make_site, make_token,
                                                      example_record):
    make_site("TOR")
    token = make_token("submitter", "TOR")["Authorization"].split()[1]
    body = _batch("TOR-qwertyuiopasdfgh", example_record)
    assert client.post("/upload/batch?dry_run=true", json=body).status_code == 400  # no session
    csrf = _signed_in(client, token)
    refused = client.post("/upload/batch?dry_run=true", json=body)
    assert refused.status_code == 400  # no CSRF header: the form-refused page
    headers = {"X-CSRFToken": csrf, "X-Registry-Source": "spreadsheet"}
    dry = client.post("/upload/batch?dry_run=true", json=body, headers=headers)
    assert dry.json["results"][0]["outcome"] == "created" and dry.json["dry_run"] is True
    written = client.post("/upload/batch?dry_run=false", json=body, headers=headers)
    assert written.json["summary"]["created"] == 1
    history = client.get(f"{URL}/TOR-qwertyuiopasdfgh/history",
                         headers={"Authorization": f"Bearer {token}"}).json
    assert [version["source"] for version in history["versions"]] == ["spreadsheet"]
    for claimed in ("fax", "console"):  # 'console' is the audit log's word, not a client's
        wrong = client.post("/upload/batch?dry_run=true", json=body,
                            headers={**headers, "X-Registry-Source": claimed})
        assert wrong.status_code == 400
        assert wrong.json["errors"][0]["field"] == "X-Registry-Source"
    assert client.post("/upload/batch?dry_run=maybe", json=body, headers=headers
                       ).status_code == 400
    not_a_batch = client.post("/upload/batch?dry_run=true", json={"rows": []}, headers=headers)
    assert not_a_batch.status_code == 400 and not_a_batch.mimetype == "application/problem+json"


def test_the_check_names_field_and_rule_and_stores_nothing(client, make_site, make_token,
                                                          example_record):
    make_site("TOR")
    token = make_token("submitter", "TOR")["Authorization"].split()[1]
    csrf = _signed_in(client, token)
    bad = {**example_record, "subject_id": "TOR-zxcvbnmasdfghjkl", "sex": "femme"}
    good = {**example_record, "subject_id": "TOR-poiuytrewqlkjhgf"}
    answer = client.post("/upload/check", json={"records": [good, bad]},
                         headers={"X-CSRFToken": csrf})
    assert answer.status_code == 200
    first, second = answer.json["results"]
    assert first["errors"] == []
    assert [(e["field"], e["code"]) for e in second["errors"]] == [("sex", "invalid_choice")]
    assert "femme" not in answer.get_data(as_text=True)
    listed = client.get(URL, headers={"Authorization": f"Bearer {token}"}).json
    assert listed["records"] == []


def test_the_api_records_a_spreadsheet_source(client, site_a, example_record):
    headers = {**site_a, "X-Registry-Source": "spreadsheet"}
    answer = client.post(f"{URL}/batch", json=_batch("TOR-mnbvcxzlkjhgfdsa", example_record),
                         headers=headers)
    assert answer.json["summary"]["created"] == 1
    history = client.get(f"{URL}/TOR-mnbvcxzlkjhgfdsa/history", headers=site_a).json
    assert history["versions"][0]["source"] == "spreadsheet"


def test_coordinators_cannot_upload(client, make_token, example_record):
    token = make_token("coordinator")["Authorization"].split()[1]
    sign_in(client, token)
    assert client.get("/upload").status_code == 403
    assert client.get("/upload/site-fields.json").status_code == 403


@pytest.mark.parametrize("path", ["/upload/check", "/upload/batch?dry_run=false"])
def test_a_body_naming_a_key_twice_is_refused_as_the_api_refuses_it(client, make_site,
                                                                     make_token, path):
    """{age 95, age 50} would be stored as 50 (issue 11): refused whole, naming the key only."""
    make_site("TOR")
    token = make_token("submitter", "TOR")["Authorization"].split()[1]
    csrf = _signed_in(client, token)
    record = json.dumps({**EXAMPLE_RECORD, "subject_id": "TOR-mnbvcxzlkjhgfdsa"})
    body = '{"records": [' + record[:-1] + ', "age_at_met_dx": 95}]}'
    answer = client.post(path, data=body, headers={"X-CSRFToken": csrf,
                                                   "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.mimetype == "application/problem+json"
    assert [(error["field"], error["code"]) for error in answer.json["errors"]] == \
        [("age_at_met_dx", "duplicate_key")]
    assert "95" not in answer.get_data(as_text=True)
    listed = client.get(URL, headers={"Authorization": f"Bearer {token}"}).json
    assert listed["records"] == []
