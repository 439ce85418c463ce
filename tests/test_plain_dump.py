"""The answer to a write is dumped without marshmallow (registry/api/plain_dump.py) to exactly
what RecordOutSchema's dump gives: over many records, and on the wire (a PUT's and a POST's
answer are byte for byte the GET of the record they wrote)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from marshmallow import Schema, fields, post_dump

from conftest import without_subject
from registry.api.plain_dump import PlainDump
from registry.core.derived import derive
from registry.core.record import canonical, validate_record
from registry.schemas.api import RecordOutSchema
from registry.services.records import record_view
from registry.services.synthetic import synthetic_record

URL = "/api/v1/records"


def test_the_answer_schema_is_dumped_without_marshmallow():
    assert PlainDump(RecordOutSchema()).plan is not None


@pytest.mark.parametrize("realistic", [False, True])
def test_the_plain_dump_of_a_stored_record_is_marshmallows(realistic):
    rng = random.Random(18)
    plain, schema = PlainDump(RecordOutSchema()), RecordOutSchema()
    moment = datetime(2026, 11, 30, 2, 30, 15, 123456, tzinfo=timezone.utc)
    for number in range(300):
        raw = synthetic_record(rng, "TOR", realistic=realistic)
        if number % 3 == 0:  # optional fields left out
            raw = {name: value for name, value in raw.items() if rng.random() < 0.7
                   or name == "subject_id"}
        record, errors = validate_record(raw)
        if errors:
            continue
        view = record_view(raw["subject_id"], record, derive(record), number + 1, moment,
                           moment + timedelta(days=number, microseconds=number))
        assert plain(view) == schema.dump(view)


def test_a_schema_that_converts_is_dumped_by_marshmallow():
    class Renamed(Schema):
        day = fields.Integer(data_key="Day")

    class Hooked(Schema):
        day = fields.Integer()

        @post_dump
        def double(self, data, **_kwargs):  # noqa: ANN001, ANN201
            return {"day": data["day"] * 2}

    class Floating(Schema):
        share = fields.Float()

    for schema, obj in ((Renamed(), {"day": 3}), (Hooked(), {"day": 3}),
                        (Floating(), {"share": 1})):
        dump = PlainDump(schema)
        assert dump.plan is None and dump(obj) == schema.dump(obj)


def test_write_answers_are_byte_for_byte_the_stored_record(client, site_a, example_record):
    subject_id, body = without_subject(example_record)
    created = client.put(f"{URL}/{subject_id}", json=body, headers=site_a)
    assert created.status_code == 201
    stored = client.get(f"{URL}/{subject_id}", headers=site_a)
    assert created.data == stored.data and created.headers["ETag"] == stored.headers["ETag"]
    assert created.content_type == stored.content_type == "application/json"
    for change in ({"last_followup_day": body["last_followup_day"] + 30}, {}):
        body.update(change)
        answer = client.put(f"{URL}/{subject_id}", json=body, headers=site_a)
        assert answer.status_code == 200
        assert answer.data == client.get(f"{URL}/{subject_id}", headers=site_a).data
    posted = client.post(URL, json={**canonical(body), "subject_id": "TOR-postedplain"},
                         headers=site_a)
    assert posted.status_code == 201
    assert posted.data == client.get(f"{URL}/TOR-postedplain", headers=site_a).data
