"""Request and response shapes of the HTTP API (besides the record itself)."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Any

from marshmallow import EXCLUDE, Schema, fields
from marshmallow.validate import OneOf, Range

from registry.core.derived import DERIVED_FIELDS
from registry.core.fields import Code, Problem, _CodedField
from registry.core.record import RecordFieldsSchema, RecordSchema
from registry.core.vocabulary import SOURCES, WITHDRAWAL_REASONS


def _derived_field(kind: str, categories: tuple[str, ...], meaning: str) -> fields.Field:
    metadata: dict[str, Any] = {"description": meaning}
    if kind == "boolean":
        return fields.Boolean(allow_none=True, metadata=metadata)
    if kind == "integer":
        return fields.Integer(allow_none=True, metadata=metadata)
    if categories:
        metadata["enum"] = list(categories)
    return fields.String(metadata=metadata)


DerivedSchema = Schema.from_dict(
    {name: _derived_field(*spec[:3]) for name, spec in DERIVED_FIELDS.items()}, name="Derived")
DerivedSchema.__doc__ = "Fields the registry computes from the record on every write."


class RecordOutSchema(RecordSchema):
    """A stored record: the submitted fields, the derived fields, version and times."""

    derived = fields.Nested(DerivedSchema, dump_only=True)
    version = fields.Integer(dump_only=True, metadata={"description": "1 for a new record, "
                                                                      "+1 on every change"})
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class RecordPageSchema(Schema):
    """One page of the site's records."""

    records = fields.List(fields.Nested(RecordOutSchema))
    next_cursor = fields.String(allow_none=True, metadata={
        "description": "pass as `cursor` for the next page; null on the last page"})


_SINCE_MESSAGE = ("must be a date such as 2026-11-29 (from the start of that day, UTC) or a "
                  "date and time with its time zone such as 2026-11-29T08:30:00Z")


class Since(_CodedField, fields.Field):
    """A point in time for `updated_since`: a date (its start, in UTC), or a date and time
    with its zone. A time without a zone is refused: it would mean different moments at
    different sites."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(metadata={"anyOf": [{"type": "string", "format": "date"},
                                             {"type": "string", "format": "date-time"}],
                                   **kwargs.pop("metadata", {})}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise self.fail("invalid_format", _SINCE_MESSAGE)
        text = value.strip()
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), time(), timezone.utc)
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.fail("invalid_format", _SINCE_MESSAGE) from None
        if moment.tzinfo is None:
            raise self.fail("missing_time_zone", "a date and time needs its time zone, e.g. "
                            "2026-11-29T08:30:00Z or 2026-11-29T08:30:00-05:00; or send the "
                            "date alone")
        return moment


class RecordListQuerySchema(Schema):
    """Query parameters of GET /records."""

    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=100, validate=Range(min=1, max=1000),
                           metadata={"description": "records per page, 1 to 1000"})
    cursor = fields.String(metadata={
        "description": "next_cursor of the previous page"})
    updated_since = Since(metadata={
        "description": "only records changed at or after this moment: a date (2026-11-29, "
                       "from its start in UTC) or a date and time with its zone "
                       "(2026-11-29T08:30:00Z)"})


class VersionSchema(Schema):
    """One version of a record."""

    version = fields.Integer()
    created_at = fields.DateTime()
    source = fields.String(metadata={"enum": list(SOURCES)})
    changed_fields = fields.List(fields.String())


class HistorySchema(Schema):
    """The versions of a record, oldest first."""

    subject_id = fields.String()
    versions = fields.List(fields.Nested(VersionSchema))


class WithdrawQuerySchema(Schema):
    """Query parameters of DELETE /records/{subject_id}."""

    class Meta:
        unknown = EXCLUDE

    reason = fields.String(load_default="consent_withdrawn", validate=OneOf(WITHDRAWAL_REASONS),
                           metadata={"description": "why the record is withdrawn"})


class SourceHeaderSchema(Schema):
    """Headers a client may send to say where a write comes from."""

    class Meta:
        unknown = EXCLUDE

    source = fields.String(data_key="X-Registry-Source", load_default="api",
                           validate=OneOf(SOURCES),
                           metadata={"description": "api (default), redcap-sync or spreadsheet"})


class WriteHeadersSchema(SourceHeaderSchema):
    """Headers of PUT /records/{subject_id}."""

    if_match = fields.String(data_key="If-Match", metadata={
        "description": 'the version being replaced, as its ETag ("3"); 412 if it is stale'})
    if_none_match = fields.String(data_key="If-None-Match", metadata={
        "description": "* to create only (412 if the record exists), or ETags that must not "
                       "be current"})


class ReadHeadersSchema(Schema):
    """Headers of GET /records/{subject_id}."""

    class Meta:
        unknown = EXCLUDE

    if_none_match = fields.String(data_key="If-None-Match", metadata={
        "description": 'the ETag you hold ("3"): 304 without a body while it is current'})


class RawRecords(_CodedField, fields.List):
    """The records of a batch: checked to be a list here, each validated on its own later so
    that one bad record does not sink the others. Documented as a list of records."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail("invalid_type", "must be a list of records")
        return value


def batch_items_property(_converter: Any, field: fields.Field, ret: dict[str, Any],
                         **_kwargs: Any) -> dict[str, Any]:
    """apispec attribute function: a batch item is documented as a record, yet any value is
    accepted, because an item that is not a valid record (or not an object at all) is reported
    as rejected at its index, not refused with the whole batch."""
    if isinstance(field, RawRecords) and "items" in ret:
        return {"items": {"anyOf": [ret["items"], {
            "description": "any other value: reported as rejected, with its index"}]}}
    return {}


def code_list_property(converter: Any, field: fields.Field, ret: dict[str, Any],
                       **_kwargs: Any) -> dict[str, Any]:
    """apispec attribute function: each code list of the record is one named schema (e.g.
    `Her2Ihc`), referenced wherever the field appears (the record as sent, as stored, in a
    batch), so that a typed client makes one enum class per field, not one per schema; a code
    that may be null is "that schema, or null"."""
    if not isinstance(field, Code) or not isinstance(field.parent, RecordFieldsSchema) \
            or "enum" not in ret:
        return {}
    name = "".join(part.title() for part in field.name.split("_"))
    codes = {"type": "string", "enum": list(field.choices)}
    registered = converter.spec.components.schemas.get(name)
    if registered is None:
        converter.spec.components.schema(name, codes)
    elif registered != codes:
        raise ValueError(f"two code lists would be published as {name}")
    ret.pop("enum")
    ret.pop("type", None)
    reference = {"$ref": f"#/components/schemas/{name}"}
    if field.allow_none:
        return {"anyOf": [reference, {"type": "null"}]}
    return reference


def nullable_enum_property(_converter: Any, field: fields.Field, ret: dict[str, Any],
                           **_kwargs: Any) -> dict[str, Any]:
    """apispec attribute function: a code that may be null is documented as "one of the codes,
    or null" (anyOf), so that JSON Schema accepts the null the registry sends for an optional
    code not filled in, and a typed client makes one enum class of the codes and None."""
    if field.allow_none and "enum" in ret:
        codes = [code for code in ret.pop("enum") if code is not None]
        ret.pop("type", None)
        return {"anyOf": [{"type": "string", "enum": codes}, {"type": "null"}]}
    return {}


class BatchRequestSchema(Schema):
    """The body of POST /records/batch."""

    error_messages = {"type": Problem("invalid_type", "the body must be a JSON object")}

    records = RawRecords(fields.Nested(RecordSchema), required=True,
                         metadata={"description": "up to REGISTRY_MAX_BATCH records"})


class BatchQuerySchema(Schema):
    """Query parameters of POST /records/batch."""

    class Meta:
        unknown = EXCLUDE

    dry_run = fields.Boolean(load_default=False, metadata={
        "description": "validate and report what would happen; write nothing"})
    atomic = fields.Boolean(load_default=False, metadata={
        "description": "all or nothing: one rejected record and nothing is written (422)"})


class FieldErrorSchema(Schema):
    """One problem with a submitted value: which field, which rule; never the value."""

    field = fields.String()
    code = fields.String(metadata={"description": "stable machine-readable rule name"})
    message = fields.String(metadata={"description": "what is expected"})


class BatchResultSchema(Schema):
    """The outcome of one record of a batch."""

    index = fields.Integer()
    subject_id = fields.String(allow_none=True)
    outcome = fields.String(metadata={
        "enum": ["created", "updated", "unchanged", "rejected", "not_written"],
        "description": "not_written: accepted, but the atomic batch was rejected as a whole"})
    would_be = fields.String(metadata={
        "enum": ["created", "updated", "unchanged"],
        "description": "for not_written: what the record would have been"})
    version = fields.Integer()
    changes = fields.Dict(keys=fields.String(), values=fields.Dict(), metadata={
        "description": "for updates: {field: {old, new}}"})
    errors = fields.List(fields.Nested(FieldErrorSchema))


class BatchSummarySchema(Schema):
    """How many records had each outcome."""

    created = fields.Integer()
    updated = fields.Integer()
    unchanged = fields.Integer()
    rejected = fields.Integer()
    not_written = fields.Integer(metadata={
        "description": "only in a rejected atomic batch: accepted records, none written"})


class BatchResponseSchema(Schema):
    """What a batch did (or, in a dry run, would do) with each record."""

    dry_run = fields.Boolean()
    atomic = fields.Boolean()
    summary = fields.Nested(BatchSummarySchema)
    results = fields.List(fields.Nested(BatchResultSchema))


class ProblemSchema(Schema):
    """RFC 9457 problem details, the body of every error."""

    type = fields.String(metadata={"description": "URI of the kind of problem"})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    code = fields.String(metadata={"description": "for 409: the conflict's machine-readable name"})
    errors = fields.List(fields.Nested(FieldErrorSchema), metadata={
        "description": "for 400 and 422: one entry per problem"})
    summary = fields.Nested(BatchSummarySchema, metadata={"description": "for a rejected batch"})
    results = fields.List(fields.Nested(BatchResultSchema),
                          metadata={"description": "for a rejected batch"})
    dry_run = fields.Boolean(metadata={"description": "for a rejected batch"})
    atomic = fields.Boolean(metadata={"description": "for a rejected batch"})


class HealthSchema(Schema):
    """Liveness or readiness."""

    status = fields.String()
    database = fields.String()
    schema_revision = fields.String()
