"""Records of the caller's site: PUT, POST, GET, list, history, DELETE, batch."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify

from registry.api import Blueprint, json_body, no_content
from registry.auth import current_caller, requires
from registry.api.conditional import version_condition
from registry.observability import count_records
from registry.permissions import Action
from registry.schemas.api import (
    BatchQuerySchema, BatchRequestSchema, BatchResponseSchema, HistorySchema, ReadHeadersSchema,
    RecordListQuerySchema, RecordOutSchema, RecordPageSchema, SourceHeaderSchema,
    WithdrawQuerySchema, WriteHeadersSchema,
)
from registry.core.record import PutRecordSchema, RecordSchema
from registry.services.intake import batches, records

blp = Blueprint("records", __name__, url_prefix="/api/v1/records",
                description="A site's records (submitter tokens only)")


ETAG_HEADER = {"ETag": {"description": 'the record\'s version, e.g. "3"; send it back as If-Match',
                        "schema": {"type": "string"}}}


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def record_answer(record: dict[str, Any]) -> Response:
    """A record's answer: what RecordOutSchema's dump gives, without running the dump (about
    0.05 ms of a write's CPU). A record view holds JSON's own types already but for its two
    timestamps, which the schema writes as ISO 8601; tests/test_records_api.py compares the
    two byte for byte. The operations still document RecordOutSchema."""
    return jsonify({**record, "created_at": record["created_at"].isoformat(),
                    "updated_at": record["updated_at"].isoformat()})


@blp.route("/<subject_id>", methods=["PUT"])
@requires(Action.WRITE_RECORDS)
@blp.arguments(WriteHeadersSchema(), location="headers")
@blp.json_body(PutRecordSchema)
@blp.response(200, RecordOutSchema, description="Updated, or unchanged", headers=ETAG_HEADER)
@blp.alt_response(201, schema=RecordOutSchema, description="Created", headers=ETAG_HEADER)
@blp.problems(409, 412)
def put_record(headers: dict[str, Any], subject_id: str) -> Any:
    """Create or replace a record (idempotent)

    201 when created, 200 when updated or unchanged. Send If-Match with the ETag of the
    version you edited to be told (412) when someone else changed it first. A withdrawn
    subject answers 409 subject_withdrawn; otherwise every problem of the body and of the
    subject_id is listed in one 422."""
    outcome, record = records.put_record(
        current_caller(), subject_id, json_body(),
        if_match=version_condition("If-Match", headers.get("if_match")),
        if_none_match=version_condition("If-None-Match", headers.get("if_none_match")),
        source=headers["source"])
    count_records("put", {outcome: 1})
    return record_answer(record), 201 if outcome == "created" else 200, _etag(record["version"])


@blp.route("", methods=["POST"])
@requires(Action.WRITE_RECORDS)
@blp.arguments(SourceHeaderSchema(), location="headers")
@blp.json_body(RecordSchema)
@blp.response(201, RecordOutSchema, description="Created", headers=ETAG_HEADER)
@blp.problems(409)
def create_record(headers: dict[str, Any]) -> Any:
    """Create a record that does not exist yet (409 if it does)"""
    record = records.create_record(current_caller(), json_body(), source=headers["source"])
    count_records("post", {"created": 1})
    return record_answer(record), 201, _etag(record["version"])


@blp.route("", methods=["GET"])
@requires(Action.READ_RECORDS)
@blp.arguments(RecordListQuerySchema(), location="query")
@blp.response(200, RecordPageSchema)
def list_records(query: dict[str, Any]) -> Any:
    """List the site's records, a page at a time

    Keyset-paginated: pass next_cursor back as cursor. With updated_since, only records changed
    at or after that time."""
    return records.list_records(current_caller(), limit=query["limit"],
                                cursor=query.get("cursor"),
                                updated_since=query.get("updated_since"))


@blp.route("/<subject_id>", methods=["GET"])
@requires(Action.READ_RECORDS)
@blp.arguments(ReadHeadersSchema(), location="headers")
@blp.response(200, RecordOutSchema, headers=ETAG_HEADER)
@blp.alt_response(304, description="Not modified: If-None-Match names the current version",
                  headers=ETAG_HEADER)
@blp.problems(404)
def get_record(headers: dict[str, Any], subject_id: str) -> Any:
    """Read one of the site's records

    Send If-None-Match with the ETag you hold to get 304 (no body) while it is current."""
    record = records.get_record(current_caller(), subject_id)
    unchanged = version_condition("If-None-Match", headers.get("if_none_match"))
    if unchanged is not None and unchanged.names(record["version"]):
        return Response(status=304, headers=_etag(record["version"]))
    return record_answer(record), 200, _etag(record["version"])


@blp.route("/<subject_id>/history", methods=["GET"])
@requires(Action.READ_RECORDS)
@blp.response(200, HistorySchema)
@blp.problems(404)
def record_history(subject_id: str) -> Any:
    """The versions of a record: number, time, source and changed fields"""
    return records.record_history(current_caller(), subject_id)


@blp.route("/<subject_id>", methods=["DELETE"])
@requires(Action.WRITE_RECORDS)
@blp.arguments(WithdrawQuerySchema(), location="query")
@blp.arguments(SourceHeaderSchema(), location="headers")
@blp.response(204, description="Withdrawn: the data and every version are erased")
@blp.problems(404)
def withdraw_record(query: dict[str, Any], headers: dict[str, Any], subject_id: str) -> Any:
    """Withdraw a record (consent withdrawn)

    Erases the record and all its versions and keeps a tombstone; a later PUT or POST of this
    subject answers 409 subject_withdrawn."""
    records.withdraw_record(current_caller(), subject_id, reason=query["reason"],
                            source=headers["source"])
    return no_content()


@blp.route("/batch", methods=["POST"])
@requires(Action.WRITE_RECORDS)
@blp.arguments(BatchQuerySchema(), location="query")
@blp.arguments(SourceHeaderSchema(), location="headers")
@blp.arguments(BatchRequestSchema())
@blp.response(200, BatchResponseSchema)
def submit_batch(query: dict[str, Any], headers: dict[str, Any], body: dict[str, Any]) -> Any:
    """Submit many records at once

    Each record gets an outcome: created, updated (with the changed fields), unchanged or
    rejected (with its errors). dry_run=true writes nothing; atomic=true writes nothing unless
    every record is accepted: otherwise 422, a problem carrying the report, in which the
    accepted records are not_written (with would_be: what they would have been)."""
    result = batches.submit_batch(
        current_caller(), body["records"], dry_run=query["dry_run"], atomic=query["atomic"],
        max_batch=current_app.config["REGISTRY_MAX_BATCH"], source=headers["source"])
    if not query["dry_run"]:
        count_records("batch", result["summary"])
    return result
