"""A schema's dump without marshmallow, for answers built from values the registry has checked.

The answer to a write is the record just validated and stored: each value already has its
field's type (codes are text, days are integers, flags are booleans), and marshmallow's dump of
such a value is the value itself, except a datetime, which becomes ISO 8601 text. Dumping it
field by field cost 0.035 ms of a PUT (B3 in docs/quality.md). PlainDump gives the same
dictionary: the schema's fields in its order, those missing from the object left out, nested
schemas alike. It is used only for a schema whose every field dumps that way (checked once,
when it is built: a field that converts, is renamed, has a dump default, or a schema with a
dump hook, and the schema is dumped by marshmallow as before); tests/test_plain_dump.py shows
the two dumps equal over many records and the PUT answer equal to the GET answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, missing

# How the value of each kind of field is dumped: as it is, or a datetime as ISO 8601 text.
_AS_IS, _ISO = "as is", "iso"
# The dumps of these methods leave a value of the field's own type as it is.
_AS_IS_SERIALIZERS = (fields.String._serialize, fields.Boolean._serialize)
Plan = list[tuple[str, Any]]  # (key, _AS_IS | _ISO | ("list", kind) | the plan of a nested schema)


def _kind(field: fields.Field) -> Any:
    """How `field` dumps a value of its type, or None if it may change it."""
    if field.data_key is not None or field.attribute is not None or field.load_only \
            or field.dump_default is not missing or not field._CHECK_ATTRIBUTE \
            or type(field).serialize is not fields.Field.serialize \
            or type(field).get_value is not fields.Field.get_value:
        return None
    serializer = type(field)._serialize
    if isinstance(field, fields.List):
        inner = _kind(field.inner)
        return None if inner is None or serializer is not fields.List._serialize \
            else ("list", inner)
    if isinstance(field, fields.Nested):
        return None if serializer is not fields.Nested._serialize or field.many \
            else _plan(field.schema)
    if serializer in _AS_IS_SERIALIZERS:
        return _AS_IS
    if isinstance(field, fields.Integer) and serializer is fields.Number._serialize \
            and type(field)._format_num is fields.Number._format_num \
            and not field.as_string:
        return _AS_IS
    if isinstance(field, fields.DateTime) and serializer is fields.DateTime._serialize \
            and (field.format or field.DEFAULT_FORMAT) in ("iso", "iso8601"):
        return _ISO
    return None


def _plan(schema: Schema) -> Plan | None:
    """The dump plan of `schema`, or None if marshmallow must dump it."""
    if schema.many or any(schema._hooks.get(name) for name in ("pre_dump", "post_dump")) \
            or type(schema).get_attribute is not Schema.get_attribute:
        return None
    plan = []
    for name, field in schema.dump_fields.items():
        kind = _kind(field)
        if kind is None or "." in name:
            return None
        plan.append((name, kind))
    return plan


def _dumped(kind: Any, value: Any) -> Any:
    if value is None or kind == _AS_IS:
        return value
    if kind == _ISO:
        return datetime.isoformat(value)
    if isinstance(kind, tuple):
        return [_dumped(kind[1], each) for each in value]
    return _apply(kind, value)


def _apply(plan: Plan, obj: dict[str, Any]) -> dict[str, Any]:
    return {name: _dumped(kind, obj[name]) for name, kind in plan if name in obj}


class PlainDump:
    """schema.dump(obj) for a dictionary whose values have their fields' types."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.plan = _plan(schema)

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The dump of `obj`: what schema.dump(obj) gives."""
        if self.plan is None:
            return self.schema.dump(obj)
        return _apply(self.plan, obj)
