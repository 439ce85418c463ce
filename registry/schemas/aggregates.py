"""Request and response shapes of the aggregate endpoints; the filters come from the catalogue."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields
from marshmallow.validate import Range

from registry.core.fields import Code
from registry.services.analysis.analyses import REMISSION_ORIGINS as ORIGINS
from registry.services.window.catalogue import SITE, dimensions

# The answer formats: every aggregate endpoint takes `format`, naming one it offers (400 else).
FORMATS = ("json", "csv")
_FORMAT_MEANING = ("json (default) or csv (Accept: text/csv also gives CSV); typed clients "
                   "call the .csv operation for CSV")
_CATALOGUE = "see GET /api/v1/aggregates/dimensions"
# The query parameters that are not filters.
RESERVED = frozenset({"rows", "columns", "by", "origin", "format", "release"})


def _filters() -> dict[str, fields.Field]:
    """One optional `<dimension>=<category>` filter per catalogue dimension (site excepted)."""
    return {name: fields.String(metadata={
        "description": f"filter: {d.meaning} (a category; {_CATALOGUE})"})
        for name, d in dimensions().items() if name != SITE}


class _FilteredQuerySchema(Schema):
    """Query parameters: the grouping, up to two equality filters, the output format.

    Unknown parameters are kept so that the service answers them with 400 and the allowed
    dimensions, instead of silently dropping a filter."""

    class Meta:
        unknown = INCLUDE


def _release() -> fields.Field:
    return fields.Integer(validate=Range(min=1), metadata={
        "description": "the release to answer from (GET /api/v1/releases); default: the newest"})


CountsQuerySchema = _FilteredQuerySchema.from_dict({
    "release": _release(),
    "rows": fields.String(required=True, metadata={
        "description": f"dimension of the rows ({_CATALOGUE})"}),
    "columns": fields.String(metadata={
        "description": "dimension of the columns (optional)"}),
    "format": Code(FORMATS, metadata={"description": _FORMAT_MEANING}),
    **_filters(),
}, name="CountsQuery")

RemissionQuerySchema = _FilteredQuerySchema.from_dict({
    "release": _release(),
    "by": fields.String(metadata={
        "description": f"dimension of the groups (optional; {_CATALOGUE})"}),
    "origin": fields.String(load_default="remission_start", metadata={
        "enum": list(ORIGINS),
        "description": "time zero: the start of remission, or the stop of trastuzumab "
                       "(discontinued records still in remission at the stop)"}),
    "format": Code(FORMATS, metadata={"description": _FORMAT_MEANING}),
    **_filters(),
}, name="RemissionQuery")


def _without_format(schema: type[Schema], name: str) -> type[Schema]:
    """The query of a .csv operation: the same parameters, the format being in the path."""
    return _FilteredQuerySchema.from_dict(
        {key: field for key, field in schema._declared_fields.items() if key != "format"},
        name=name)


CountsCsvQuerySchema = _without_format(CountsQuerySchema, "CountsCsvQuery")
RemissionCsvQuerySchema = _without_format(RemissionQuerySchema, "RemissionCsvQuery")


class JsonOnlyQuerySchema(Schema):
    """The `format` of an endpoint that answers JSON only."""

    format = Code(("json",), metadata={"description": "json (the only format offered here)"})


class DimensionSchema(Schema):
    """One dimension of the catalogue."""

    name = fields.String()
    meaning = fields.String()
    categories = fields.List(fields.String())
    alone_only = fields.Boolean(metadata={"description": "may only be counted on its own"})


class CatalogueSchema(Schema):
    """The dimensions a coordinator may count by."""

    dimensions = fields.List(fields.Nested(DimensionSchema))


class DisclosureSchema(Schema):
    """How the answer was protected."""

    min_cell_count = fields.Integer(metadata={"description": "no published count is 1..k-1"})
    method = fields.List(fields.String(), metadata={
        "description": "cell_key_perturbation (when on) and suppression"})
    release = fields.Integer(metadata={"description": "the release the answer is computed from"})
    contributing_sites = fields.Integer(allow_none=True, metadata={
        "description": "sites with records in the cohort; null when fewer than 3"})
    additive = fields.Boolean(metadata={
        "description": "false when counts are perturbed: cells need not add up to totals"})


_COUNT = ("a count (null with suppressed: true when withheld), labelled by its categories")


class CountsSchema(Schema):
    """A one- or two-way table of pooled counts."""

    rows = fields.String()
    columns = fields.String(allow_none=True)
    filters = fields.Dict(keys=fields.String(), values=fields.String())
    cells = fields.List(fields.Dict(), metadata={"description": _COUNT})
    row_totals = fields.List(fields.Dict(), metadata={"description": _COUNT})
    column_totals = fields.List(fields.Dict(), metadata={"description": _COUNT})
    total = fields.Integer(allow_none=True)
    disclosure = fields.Nested(DisclosureSchema)


class IntervalSchema(Schema):
    """One fixed yearly interval of the life table (the survival analysis's, named as before:
    relapses = events, in_remission = survival); to_year null = the open last one."""

    from_year = fields.Integer()
    to_year = fields.Integer(allow_none=True)
    at_risk = fields.Integer(allow_none=True, metadata={
        "description": "in remission and followed at the start of the interval"})
    entered = fields.Integer(allow_none=True, metadata={
        "description": "entering the risk set in the interval (delayed entry at eligibility)"})
    relapses = fields.Integer(allow_none=True)
    censored = fields.Integer(allow_none=True)
    in_remission = fields.Float(allow_none=True, metadata={
        "description": "actuarial proportion still in remission at the end of the interval, "
                       "from the published counts (null where not estimable; see "
                       "/analyses/survival)"})
    suppressed = fields.Boolean()


class RemissionGroupSchema(Schema):
    """The life table of one group."""

    group = fields.String()
    count = fields.Integer(allow_none=True)
    suppressed = fields.Boolean()
    intervals = fields.List(fields.Nested(IntervalSchema))


class RemissionSchema(Schema):
    """Yearly life tables of sustained remission."""

    by = fields.String(allow_none=True)
    origin = fields.String()
    filters = fields.Dict(keys=fields.String(), values=fields.String())
    interval_days = fields.Float()
    entry_day = fields.String(metadata={"description": "when records enter the risk set"})
    groups = fields.List(fields.Nested(RemissionGroupSchema))
    total = fields.Integer(allow_none=True, metadata={
        "description": "sum of the published group counts; null when one is withheld"})
    disclosure = fields.Nested(DisclosureSchema)


class QueryLogQuerySchema(JsonOnlyQuerySchema):
    """Query parameters of the query log."""

    limit = fields.Integer(load_default=100, validate=Range(min=1, max=1000))
    # Bounded: an id beyond the database's integer would fail in SQL, not as a bad parameter.
    before = fields.Integer(validate=Range(min=1, max=2**31 - 1), metadata={
        "description": "next_before of the previous page"})


class QueryLogEntrySchema(Schema):
    """One logged aggregate query."""

    id = fields.Integer()
    asked_at = fields.DateTime()
    token = fields.String(metadata={"description": "public id of the token that asked"})
    role = fields.String()
    query = fields.String(metadata={"description": "the normalised question (the same for "
                                                   "every rewording of one table)"})
    release = fields.Integer(allow_none=True, metadata={
        "description": "the release asked of (null for questions asked before releases)"})
    snapshot = fields.String(allow_none=True, metadata={
        "description": "data state of questions asked before releases existed; else null"})
    outcome = fields.String(metadata={
        "enum": ["answered", "refused", "repeated", "limit_reached"],
        "description": "repeated: asked before by this user of this release (same answer, "
                       "free); limit_reached: over the question budget"})
    released = fields.Dict(allow_none=True, metadata={
        "description": "what was released (an answer, or a refusal); null for repeats"})


class QueryLogSchema(Schema):
    """A page of the query log, newest first."""

    entries = fields.List(fields.Nested(QueryLogEntrySchema))
    next_before = fields.Integer(allow_none=True)
