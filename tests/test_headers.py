"""Request headers a client chooses: conditional headers parsed by one tolerant function (400 or
412 for anything odd, never 500), and no header value echoed or logged unless it passed a strict
format. Hypothesis fuzzes If-Match, If-None-Match, Authorization, Content-Type, Accept and
X-Request-ID together."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import without_subject
from registry.observability import accepted_request_id

ODD_TAGS = [
    "9" * 5000, '"' + "9" * 5000 + '"', "\u00e9", '"\u00e9"', '"\u0663"', "\uff13", '"\uff13"',
    "\u00b2", '"\u00b2"', "", "   ", "yesterday", '"1', '1"', 'W/', 'W/"', '"1" "2"', '"1",,',
    '"1";', "*, \"1\"", '"\x7f"', "\x00", '"1"\t,junk', "W/W/\"1\"",
]


def _put(client, headers, record, **extra):  # noqa: ANN001, ANN202
    subject_id, body = without_subject(record)
    return client.put(f"/api/v1/records/{subject_id}", json=body, headers={**headers, **extra})


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("value", ODD_TAGS)
def test_an_odd_conditional_header_is_a_400_or_412_never_a_500(client, site_a, example_record,
                                                                header, value):
    assert _put(client, site_a, example_record).status_code == 201
    subject_id = example_record["subject_id"]
    answer = _put(client, site_a, example_record, **{header: value})
    # A well-formed If-None-Match naming no version lets the (unchanged) write through.
    allowed = (400, 412) if header == "If-Match" else (200, 400, 412)
    assert answer.status_code in allowed, answer.status_code
    if answer.status_code == 400:
        assert answer.json["errors"] == [{"field": header, "code": "invalid_format",
                                          "message": answer.json["errors"][0]["message"]}]
    if len(value.strip()) > 2:
        assert value.strip() not in answer.get_data(as_text=True)
    if header == "If-None-Match":
        read = client.get(f"/api/v1/records/{subject_id}", headers={**site_a, header: value})
        assert read.status_code in (200, 400), read.status_code
    stored = client.get(f"/api/v1/records/{subject_id}", headers=site_a)
    assert stored.json["version"] == 1


def test_a_well_formed_tag_naming_no_version_is_a_412(client, site_a, example_record):
    assert _put(client, site_a, example_record).status_code == 201
    for tag in ('"' + "9" * 5000 + '"', '"0"', '"01"', '"x"', '"2", "3"', 'W/"7"'):
        assert _put(client, site_a, example_record, **{"If-Match": tag}).status_code == 412
    assert _put(client, site_a, example_record, **{"If-Match": '"5", W/"1"'}).status_code == 200


def test_if_none_match_star_creates_only(client, site_a, example_record):
    assert _put(client, site_a, example_record, **{"If-None-Match": "*"}).status_code == 201
    again = _put(client, site_a, {**example_record, "age_at_met_dx": 60},
                 **{"If-None-Match": "*"})
    assert again.status_code == 412
    assert _put(client, site_a, example_record, **{"If-None-Match": '"1"'}).status_code == 412
    assert _put(client, site_a, example_record, **{"If-None-Match": '"2"'}).status_code == 200


def test_if_none_match_on_a_read_answers_304_while_current(client, site_a, example_record):
    assert _put(client, site_a, example_record).status_code == 201
    url = f"/api/v1/records/{example_record['subject_id']}"
    fresh = client.get(url, headers=site_a)
    held = client.get(url, headers={**site_a, "If-None-Match": fresh.headers["ETag"]})
    assert held.status_code == 304 and held.get_data() == b"" and held.headers["ETag"] == '"1"'
    assert _put(client, site_a, {**example_record, "age_at_met_dx": 60}).status_code == 200
    changed = client.get(url, headers={**site_a, "If-None-Match": fresh.headers["ETag"]})
    assert changed.status_code == 200 and changed.json["age_at_met_dx"] == 60


# Header values as a WSGI server hands them over: latin-1 text without line breaks.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff,
                                    exclude_characters="\x7f"), max_size=300)
ORDINARY = ["application/json", "application/json; charset=utf-8", "text/plain", "*/*",
            "application/problem+json"]
HEADER_VALUES = st.one_of(
    HEADER_TEXT, st.sampled_from(ODD_TAGS), st.just('"1"'), st.just("*"),
    st.builds(lambda text: f"Bearer {text}", HEADER_TEXT),
    st.sampled_from(ORDINARY + ["application/json; charset=\u00e9",
                                "multipart/form-data; boundary=" + "x" * 200]),
)
# The registry's own wording that a generated value may happen to match ("Bearer <").
OWN_WORDS = ("send the header Authorization: Bearer <token>", 'Bearer realm="registry"')
FUZZED = ["If-Match", "If-None-Match", "Authorization", "Content-Type", "Accept", "X-Request-ID"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.fixed_dictionaries({}, optional={name: HEADER_VALUES for name in FUZZED}),
       operation=st.sampled_from(["put", "get", "list", "batch", "post", "delete", "contract"]))
def test_header_fuzzing_finds_no_500_and_no_echo(client, site_a, example_record, caplog,
                                                 values, operation):
    subject_id, body = without_subject(example_record)
    headers = {**site_a, "Content-Type": "application/json", **values}
    with caplog.at_level(logging.DEBUG):
        if operation == "put":
            answer = client.put(f"/api/v1/records/{subject_id}", data=_json(body),
                                headers=headers)
        elif operation == "get":
            answer = client.get(f"/api/v1/records/{subject_id}", headers=headers)
        elif operation == "list":
            answer = client.get("/api/v1/records", headers=headers)
        elif operation == "batch":
            answer = client.post("/api/v1/records/batch",
                                 data=_json({"records": [example_record]}), headers=headers)
        elif operation == "post":
            answer = client.post("/api/v1/records", data=_json(example_record), headers=headers)
        elif operation == "delete":
            answer = client.delete(f"/api/v1/records/{subject_id}", headers=headers)
        else:
            answer = client.get("/api/v1/openapi.json", headers=headers)
    assert answer.status_code < 500, answer.get_data(as_text=True)[:300]
    shown = answer.get_data(as_text=True) + "\n" + "\n".join(
        value for name, value in answer.headers.items() if name != "Content-Type")
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    caplog.clear()
    # The contract's own text, without the fuzzed headers: Hypothesis draws strings from the
    # code's constants (codes such as not_applicable), which the spec lists.
    contract = client.get("/api/v1/openapi.json").get_data(as_text=True) \
        if operation == "contract" else ""
    for name, value in values.items():
        if len(value) < 8 or len(set(value)) < 4 or value in ORDINARY \
                or (name == "X-Request-ID" and accepted_request_id(value)) \
                or any(value in words for words in OWN_WORDS) or value in contract:
            continue  # too plain to tell apart from the answer's own words; a kept request id
        assert value not in shown, f"{name} echoed"
        assert value not in logged, f"{name} logged"


# Other headers a client chooses, against every kind of page: none is repeated or logged (the
# Host header once came back in the docs page's OAuth redirect URL and in the Location and page
# of Werkzeug's missing-slash redirect).
OTHER_HEADERS = ["Host", "Origin", "Referer", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host",
                 "Forwarded", "Cookie", "Accept-Language", "X-Registry-Source", "Range",
                 "If-Modified-Since", "X-HTTP-Method-Override", "Traceparent"]
PAGES = [("GET", "/docs"), ("GET", "/docs/"), ("GET", "/"), ("GET", "/sign-in"),
         ("POST", "/sign-in"), ("GET", "/healthz"), ("GET", "/api/v1/openapi.json"),
         ("GET", "/api/v1/records"), ("GET", "/api/v1/records/TOR-abcdefghijklmnop"),
         ("PATCH", "/api/v1/records"), ("GET", "/no-such-page")]


@pytest.mark.parametrize("header", OTHER_HEADERS)
def test_no_other_header_is_repeated_or_logged(client, site_a, caplog, header):
    sent = "zq416x555x0199.example.org"
    answers = []
    with caplog.at_level(logging.DEBUG):
        for auth in ({}, site_a):
            for method, path in PAGES:
                answers.append(client.open(path, method=method, headers={**auth, header: sent}))
    assert all(answer.status_code < 500 for answer in answers)
    assert any(answer.status_code == 308 for answer in answers)  # /docs: the slash redirect
    for answer in answers:
        assert sent not in answer.get_data(as_text=True) + str(answer.headers), (
            header, answer.request.path)
    assert sent not in "\n".join(f"{record.getMessage()} {record.__dict__}"
                                 for record in caplog.records)


def _json(value: object) -> str:
    import json

    return json.dumps(value)


DUPLICATED = '{"records": [{"subject_id": "TOR-abcdefghijklmnop", "age_at_met_dx": 95, ' \
             '"age_at_met_dx": 50}]}'


@pytest.mark.parametrize("path, body, named", [
    ("/api/v1/records/TOR-7f3a9c2e", '{"age_at_met_dx": 95, "sex": "female", '
                                     '"age_at_met_dx": 50}', "age_at_met_dx"),
    ("/api/v1/records", '{"subject_id": "TOR-7f3a9c2e", "subject_id": "TOR-7f3a9c2f"}',
     "subject_id"),
    ("/api/v1/records/batch", DUPLICATED, "age_at_met_dx"),
    ("/api/v1/records/batch", '{"records": [], "records": []}', "records"),
    ("/api/v1/records", '{"subject_id": "TOR-7f3a9c2e", "ecog_at_met_dx": 1, '
                        '"ecog_at_met_dx": 2}', "ecog_at_met_dx"),
    ("/api/v1/records", '{"subject_id": "TOR-7f3a9c2e", "version": 1, "version": 2}', "version"),
    # The same key once written with an escape is the same key.
    ("/api/v1/records/TOR-7f3a9c2e", '{"age_at_met_dx": 95, "age_at_met_\\u0064x": 50}',
     "age_at_met_dx"),
    # A key the registry does not know is named only when plain: this one is a phone number.
    ("/api/v1/records", '{"subject_id": "TOR-7f3a9c2e", "416-555-0199": 1, '
                        '"416-555-0199": 2}', "(unnamed field)"),
])
def test_a_body_naming_a_key_twice_is_refused_naming_the_key(client, site_a, path, body, named):
    method = client.put if path.count("/") == 4 and "batch" not in path else client.post
    answer = method(path, data=body, headers={**site_a, "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.mimetype == "application/problem+json"
    [error] = answer.json["errors"]
    assert error["code"] == "duplicate_key"
    assert error["field"] == named
    text = answer.get_data(as_text=True)
    for value in ("95", "50", "7f3a9c2f", "416-555-0199"):
        assert value not in text
    assert client.get("/api/v1/records", headers=site_a).json["records"] == []
