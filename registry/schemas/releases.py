"""Request and response shapes of the releases endpoints."""

from __future__ import annotations

from marshmallow import Schema, fields
from marshmallow.validate import Length, Regexp

# A steward's note on a release: one line of plain text (no control characters).
NOTE = Regexp(r"^[^\x00-\x1f\x7f]*$", error="one line of plain text")


class ReleaseCutSchema(Schema):
    """What a steward may say when cutting a release."""

    note = fields.String(load_default=None, validate=[Length(max=200), NOTE], metadata={
        "description": "a short note (what the release is for); at most 200 characters"})


class ReleaseSchema(Schema):
    """One release of the registry's data."""

    id = fields.Integer(metadata={"description": "pass as release=<id> to aggregates"})
    cut_at = fields.DateTime()
    note = fields.String(allow_none=True)
    record_count = fields.Integer(allow_none=True, metadata={
        "description": "records the release holds (lowered when a patient withdraws); for a "
                       "coordinator, protected like the total of an unfiltered table"})
    changes = fields.Integer(allow_none=True, metadata={
        "description": "records created, changed or withdrawn since the previous release "
                       "(stewards only; null for coordinators)"})


class ReleaseListSchema(Schema):
    """Every release, newest first."""

    releases = fields.List(fields.Nested(ReleaseSchema))
