"""Request and response shapes of the analysis endpoints (survival, hazard ratios)."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields

from registry.core.fields import Code
from registry.schemas.aggregates import (
    _FORMAT_MEANING, FORMATS, DisclosureSchema, _filters, _release, _without_format,
)
from registry.services.analysis.analyses import (
    AT_LANDMARK, DEFAULT_YEARS, MAX_COVARIATES, MAX_LANDMARK_YEARS, MAX_YEARS, ORIGINS, OUTCOMES,
)

# The query parameters that are not filters.
RESERVED = frozenset({"origin", "outcome", "landmark_years", "by", "years", "covariates",
                      "format", "release"})
_CATALOGUE = "see GET /api/v1/aggregates/dimensions"


class _AnalysisQuerySchema(Schema):
    """Query parameters shared by the analyses; unknown ones are kept so that the service
    answers them with 400 and the allowed dimensions."""

    class Meta:
        unknown = INCLUDE


_DESIGN = {
    "release": _release(),
    "origin": fields.String(load_default="remission_start", metadata={
        "enum": list(ORIGINS),
        "description": "time zero: remission start; the stop of trastuzumab (records "
                       "discontinued in remission); or a landmark landmark_years after "
                       "remission start (records still in remission then, compared by whether "
                       "trastuzumab had been stopped)"}),
    "landmark_years": fields.Integer(metadata={
        "description": f"with origin=landmark: years after remission start, "
                       f"1..{MAX_LANDMARK_YEARS}"}),
    "outcome": fields.String(load_default="relapse", metadata={
        "enum": list(OUTCOMES),
        "description": "relapse (death without relapse censored) or relapse_or_death"}),
    "format": Code(FORMATS, metadata={"description": _FORMAT_MEANING}),
}

SurvivalQuerySchema = _AnalysisQuerySchema.from_dict({
    **_DESIGN,
    "by": fields.String(metadata={
        "description": f"dimension of the groups (optional; not with origin=landmark; "
                       f"{_CATALOGUE})"}),
    "years": fields.Integer(load_default=DEFAULT_YEARS, metadata={
        "description": f"closed yearly intervals before the open last one, 1..{MAX_YEARS}"}),
    **_filters(),
}, name="SurvivalQuery")

HazardRatiosQuerySchema = _AnalysisQuerySchema.from_dict({
    **_DESIGN,
    "covariates": fields.String(load_default="", metadata={
        "description": f"comma-separated catalogue dimensions, at most {MAX_COVARIATES} "
                       f"({_CATALOGUE}); with origin=landmark, {AT_LANDMARK} is always in "
                       "the model"}),
    **_filters(),
}, name="HazardRatiosQuery")

SurvivalCsvQuerySchema = _without_format(SurvivalQuerySchema, "SurvivalCsvQuery")
HazardRatiosCsvQuerySchema = _without_format(HazardRatiosQuerySchema, "HazardRatiosCsvQuery")


class MedianSchema(Schema):
    """The median time to the outcome, in years from the origin, with its 95 % interval."""

    years = fields.Float()
    lower = fields.Float(allow_none=True)
    upper = fields.Float(allow_none=True, metadata={"description": "null: not reached"})


class SurvivalIntervalSchema(Schema):
    """One fixed yearly interval [from_year, to_year); to_year null = the open last one."""

    from_year = fields.Integer()
    to_year = fields.Integer(allow_none=True)
    at_risk = fields.Integer(allow_none=True, metadata={
        "description": "in the risk set at the start of the interval"})
    entered = fields.Integer(allow_none=True, metadata={
        "description": "entering the risk set after its start (delayed entry at eligibility)"})
    events = fields.Integer(allow_none=True, metadata={"description": "the outcome happened"})
    censored = fields.Integer(allow_none=True, metadata={
        "description": "follow-up ended without the outcome"})
    survival = fields.Float(allow_none=True, metadata={
        "description": "actuarial estimate at the end of the interval, from the published "
                       "counts; null before the first interval anyone is at risk at the start "
                       "of, from a withheld count on, and for the open interval"})
    lower = fields.Float(allow_none=True, metadata={"description": "95 % limit (Greenwood, "
                                                                   "log-log)"})
    upper = fields.Float(allow_none=True, metadata={"description": "95 % limit"})
    suppressed = fields.Boolean()


class SurvivalGroupSchema(Schema):
    """The life table of one group."""

    group = fields.String()
    count = fields.Integer(allow_none=True, metadata={"description": "records in the group"})
    suppressed = fields.Boolean()
    intervals = fields.List(fields.Nested(SurvivalIntervalSchema))
    median = fields.Nested(MedianSchema, allow_none=True)


class LogRankSchema(Schema):
    """The log-rank test between the groups that hold records, or why it was refused."""

    refused = fields.Boolean()
    rule = fields.String(metadata={"description": "the rule that refused it"})
    message = fields.String(metadata={"description": "what would make it answerable"})
    groups = fields.List(fields.String())
    chi_square = fields.Float()
    degrees_of_freedom = fields.Integer()
    p_value = fields.Float(metadata={"description": "two significant digits"})


class SurvivalSchema(Schema):
    """Actuarial survival in fixed yearly intervals with delayed entry."""

    origin = fields.String()
    outcome = fields.String()
    landmark_years = fields.String(allow_none=True)
    by = fields.String(allow_none=True)
    years = fields.Integer()
    filters = fields.Dict(keys=fields.String(), values=fields.String())
    outcome_meaning = fields.String()
    entry_day = fields.String(metadata={"description": "when records enter the risk set"})
    groups = fields.List(fields.Nested(SurvivalGroupSchema))
    logrank = fields.Nested(LogRankSchema, allow_none=True)
    disclosure = fields.Nested(DisclosureSchema)


class HazardRatioSchema(Schema):
    """One level of a covariate: records and events (protected), hazard ratio against the
    reference level with its 95 % interval and p (null for a level without records)."""

    covariate = fields.String()
    level = fields.String()
    reference = fields.Boolean()
    records = fields.Integer(allow_none=True)
    events = fields.Integer(allow_none=True)
    hazard_ratio = fields.Float(allow_none=True)
    lower = fields.Float(allow_none=True)
    upper = fields.Float(allow_none=True)
    p_value = fields.Float(allow_none=True)
    suppressed = fields.Boolean()


class ProportionalHazardsSchema(Schema):
    """The Schoenfeld-residual test of one covariate (smallest p among its levels)."""

    covariate = fields.String()
    p_value = fields.Float()
    holds = fields.Boolean()


class HazardRatiosSchema(Schema):
    """A Cox model with delayed entry."""

    origin = fields.String()
    outcome = fields.String()
    landmark_years = fields.String(allow_none=True)
    covariates = fields.List(fields.String())
    filters = fields.Dict(keys=fields.String(), values=fields.String())
    outcome_meaning = fields.String()
    records = fields.Integer(allow_none=True)
    events = fields.Integer(allow_none=True)
    levels = fields.List(fields.Nested(HazardRatioSchema))
    proportional_hazards = fields.List(fields.Nested(ProportionalHazardsSchema))
    warnings = fields.List(fields.String(), metadata={"description": "plain-language cautions"})
    disclosure = fields.Nested(DisclosureSchema)
