"""The record schema: every field and rule of record.md and privacy.md section 1.

This schema is the one source of truth: the API validates with it, and the published dictionary,
the REDCap data dictionary, the aggregate catalogue and the OpenAPI spec are generated from it.
Field metadata: `description`; `dimension` (may be an aggregate dimension); `coding` (mapping to
standard code systems); `unit`. The rules relating fields are declared once, in core/rules.py.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, missing, validates_schema

from registry.core import vocabulary as v
from registry.core.fields import (
    Code, CodeList, Problem, SubjectId, WholeNumber, problems_to_list,
)
from registry.core.identifiers import is_identifier_field_name, printable_field_name
from registry.core.rules import check_conditional_rules

DICTIONARY_VERSION = "1.0.0"
DEFAULT_MIN_REMISSION_DAYS = 730
MAX_DAY = 18262  # 50 years
DAY_FIELDS = (
    "primary_dx_day", "trastuzumab_start_day", "remission_start_day", "trastuzumab_stop_day",
    "trastuzumab_resume_day", "progression_day", "last_followup_day",
)
# Keys the registry sets itself; a body that sends them is refused (mass assignment).
READ_ONLY_KEYS = frozenset({
    "id", "version", "site", "site_id", "site_code", "derived", "created_at", "updated_at",
    "cell_key", "withdrawn", "source",
})


# Where a schema made without a threshold reads the deployment's: the server points it at its
# settings (read_threshold_from); at a site, the registry's published value or the default.
_threshold_setting: Callable[[], int | None] = lambda: None


def read_threshold_from(setting: Callable[[], int | None]) -> None:
    """Make schemas built without a threshold ask `setting` for it (None: the default)."""
    global _threshold_setting
    _threshold_setting = setting


def _this_year() -> int:
    return date.today().year


def _day(minimum: int = -MAX_DAY, maximum: int = MAX_DAY, **kwargs: Any) -> WholeNumber:
    metadata = {"unit": "days from metastatic diagnosis", **kwargs.pop("metadata", {})}
    return WholeNumber(minimum, maximum, metadata=metadata, **kwargs)


# The hooks RecordFieldsSchema.load_record knows: it does their work itself (check_rules, and
# any unknown key sent to load()). A schema class with any other hook is read through load().
_SHORTCUT_HOOKS = {"validates_schema": ["check_record_rules", "reject_unknown_fields"]}


@cache
def _hooks_of(schema_class: type[Schema]) -> dict[str, list[str]]:
    """The names of a schema class's hooks by kind (marshmallow's public resolve_hooks)."""
    hooks = schema_class.resolve_hooks()  # type: ignore[attr-defined]
    return {tag: sorted(name for name, _many, _kwargs in found)
            for tag, found in hooks.items() if found}


def _optional(field_class: type, *args: Any, **kwargs: Any) -> Any:
    """An optional field: null and absent mean the same (not given)."""
    return field_class(*args, required=False, allow_none=True, load_default=None, **kwargs)


class RecordFieldsSchema(Schema):
    """The submitted fields of a record, without subject_id (which a PUT takes from the URL)."""

    class Meta:
        unknown = EXCLUDE  # unknown keys are reported by reject_unknown_fields, not dropped
        ordered = True

    error_messages = {
        "type": Problem("invalid_type", "the record must be a JSON object"),
    }

    met_dx_year = WholeNumber(
        v.FIRST_MET_DX_YEAR, _this_year, required=True,
        metadata={"description": "year of the diagnosis of metastatic disease (day 0); the only "
                                 "calendar value of the record, 1998 to the current year",
                  "dimension": False})
    age_at_met_dx = WholeNumber(
        18, 90, required=True, above_code="age_not_top_coded",
        above_message="ages over 89 are sent as 90",
        metadata={"description": "age in years at metastatic diagnosis; 90 means 90 or older",
                  "unit": "years"})
    sex = Code(v.SEX, required=True, metadata={"description": "sex", "dimension": False})
    her2_ihc = Code(v.HER2_IHC, required=True, metadata={
        "description": "HER2 immunohistochemistry score (ASCO/CAP 2018)", "dimension": True,
        "coding": {"system": "NAACCR", "item": 3850, "name": "HER2 IHC Summary",
                   "guideline": "ASCO/CAP 2018 HER2 testing"}})
    her2_ish = Code(v.HER2_ISH, required=True, metadata={
        "description": "HER2 in situ hybridisation result; HER2-positive means IHC 3+ or ISH "
                       "amplified", "dimension": True,
        "coding": {"system": "NAACCR", "item": 3855, "name": "HER2 Overall Summary",
                   "guideline": "ASCO/CAP 2018 HER2 testing"}})
    her2_tested_on = _optional(Code, v.HER2_TESTED_ON, metadata={
        "description": "tissue on which HER2 was tested", "dimension": True})
    er_status = Code(v.RECEPTOR_STATUS, required=True, metadata={
        "description": "oestrogen-receptor status", "dimension": True,
        "coding": {"system": "NAACCR", "item": 3827, "name": "Estrogen Receptor Summary"}})
    pr_status = Code(v.RECEPTOR_STATUS, required=True, metadata={
        "description": "progesterone-receptor status", "dimension": True,
        "coding": {"system": "NAACCR", "item": 3915, "name": "Progesterone Receptor Summary"}})
    histology = _optional(Code, v.HISTOLOGY, metadata={
        "description": "histological type of the primary tumour", "dimension": True})
    presentation = Code(v.PRESENTATION, required=True, metadata={
        "description": "de novo metastatic disease, or recurrence after early breast cancer",
        "dimension": True})
    primary_dx_day = _optional(_day, -MAX_DAY, -1, metadata={
        "description": "day of the diagnosis of the primary (early) breast cancer"})
    prior_adjuvant_trastuzumab = Code(v.YES_NO_UNKNOWN, required=True, metadata={
        "description": "trastuzumab given in the adjuvant setting before metastasis",
        "dimension": True})
    metastatic_sites = CodeList(v.METASTATIC_SITES, non_empty=True, required=True, metadata={
        "description": "sites of metastatic disease at metastatic diagnosis (at least one)"})
    lesion_count = _optional(Code, v.LESION_COUNT, metadata={
        "description": "number of metastatic lesions (proxy for oligometastatic disease)",
        "dimension": True})
    ecog_at_met_dx = _optional(WholeNumber, 0, 4, metadata={
        "description": "ECOG performance status at metastatic diagnosis; null = unknown",
        "coding": {"system": "LOINC", "code": "89247-1",
                   "answers": {"0": "LA9622-7", "1": "LA9623-5", "2": "LA9624-3",
                               "3": "LA9625-0", "4": "LA9626-8"},
                   "profile": "mCODE ECOGPerformanceStatus"}})
    first_line_anti_her2 = Code(v.FIRST_LINE_ANTI_HER2, required=True, metadata={
        "description": "anti-HER2 therapy of the first metastatic line", "dimension": True})
    first_line_chemotherapy = Code(v.FIRST_LINE_CHEMOTHERAPY, required=True, metadata={
        "description": "chemotherapy of the first metastatic line", "dimension": True})
    later_anti_her2 = _optional(CodeList, v.LATER_ANTI_HER2, metadata={
        "description": "anti-HER2 agents given after the first line; empty or absent = none"})
    local_therapy_metastases = _optional(CodeList, v.LOCAL_THERAPY_METASTASES, metadata={
        "description": "local therapy of metastases; empty or absent = none"})
    primary_tumour_surgery = _optional(Code, v.YES_NO, metadata={
        "description": "surgery of the primary tumour in de novo disease", "dimension": True})
    endocrine_maintenance = Code(v.ENDOCRINE_MAINTENANCE, required=True, metadata={
        "description": "endocrine maintenance therapy", "dimension": True})
    trastuzumab_start_day = _day(-30, 3650, required=True, metadata={
        "description": "day trastuzumab was started for metastatic disease"})
    best_response = Code(v.BEST_RESPONSE, required=True, metadata={
        "description": "best response to first-line therapy; the registry includes "
                       "complete_response and ned_after_local_therapy only",
        "coding": {"system": "RECIST 1.1",
                   "map": {"complete_response": "CR", "partial_response": "PR",
                           "stable_disease": "SD", "progressive_disease": "PD",
                           "not_evaluable": "NE",
                           "ned_after_local_therapy": "CR after local therapy"}}})
    remission_start_day = _day(0, MAX_DAY, required=True, metadata={
        "description": "day remission (or no evidence of disease) was first documented"})
    response_assessment = _optional(Code, v.RESPONSE_ASSESSMENT, metadata={
        "description": "how the remission was assessed", "dimension": True})
    maintenance_status = Code(v.MAINTENANCE_STATUS, required=True, metadata={
        "description": "trastuzumab maintenance: ongoing, discontinued, or interrupted and "
                       "resumed", "dimension": True})
    trastuzumab_stop_day = _optional(_day, metadata={
        "description": "day trastuzumab was stopped"})
    discontinuation_reason = _optional(Code, v.DISCONTINUATION_REASON, metadata={
        "description": "why trastuzumab was stopped",
        "dimension": True})
    trastuzumab_resume_day = _optional(_day, metadata={
        "description": "day trastuzumab was resumed"})
    lvef_baseline_pct = _optional(WholeNumber, 10, 90, metadata={
        "description": "left-ventricular ejection fraction before trastuzumab", "unit": "%"})
    lvef_nadir_pct = _optional(WholeNumber, 5, 90, metadata={
        "description": "lowest LVEF on trastuzumab", "unit": "%"})
    cardiac_event = Code(v.CARDIAC_EVENT, required=True, metadata={
        "description": "worst cardiac event on trastuzumab", "dimension": True})
    progression_day = _optional(_day, metadata={
        "description": "day of progression; null = no progression"})
    disease_status_last = Code(v.DISEASE_STATUS, required=True, metadata={
        "description": "disease status at the last follow-up", "dimension": True,
        "coding": {"profile": "mCODE CancerDiseaseStatus", "system": "SNOMED CT",
                   "map": {"ned": "260415000", "stable": "359746009",
                           "responding": "268910001", "progressing": "271299001",
                           "unknown": "709137006"}}})
    last_followup_day = _day(0, MAX_DAY, required=True, metadata={
        "description": "day of the last follow-up; on or after every other day of the record"})
    vital_status = Code(v.VITAL_STATUS, required=True, metadata={
        "description": "vital status at the last follow-up", "dimension": True})
    cause_of_death = _optional(Code, v.CAUSE_OF_DEATH, metadata={
        "description": "cause of death", "dimension": True})

    def __init__(self, *args: Any, min_remission_days: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_remission_days = min_remission_days
        plain = not (self.many or self.partial or self.only or self.exclude) and \
            _hooks_of(type(self)) == _SHORTCUT_HOOKS
        # (key in the body, key in the data, field) of every field read, in the schema's order.
        self._shortcut = [(field.data_key or name, field.attribute or name, field)
                          for name, field in self.load_fields.items()] if plain else None
        self._known_keys = frozenset(key for key, _name, _field in self._shortcut or ())

    def load_record(self, raw: Any) -> dict[str, Any]:
        """The same as load(raw), in a third less CPU for a valid record (a PUT's validation
        was 0.07 ms, 5 % of its CPU): a dict naming only the schema's fields is read field by
        field with each field's own deserialize() and then checked with check_rules, as the
        schema's two validators would; anything else, and every record that fails a field or a
        rule, goes through load(), so that errors (their fields, codes, messages and order) are
        always load()'s own."""
        if self._shortcut is None or not isinstance(raw, dict) or \
                not raw.keys() <= self._known_keys:
            return self.load(raw)
        data: dict[str, Any] = {}
        try:
            for key, name, field in self._shortcut:
                value = field.deserialize(raw.get(key, missing), key, raw)
                if value is not missing:
                    data[name] = value
        except ValidationError:
            return self.load(raw)
        if check_rules(data, raw, self.remission_threshold()):
            return self.load(raw)
        return data

    def remission_threshold(self) -> int:
        """The inclusion threshold in days: the schema's own, else the deployment's setting."""
        if self.min_remission_days is not None:
            return self.min_remission_days
        setting = _threshold_setting()
        return DEFAULT_MIN_REMISSION_DAYS if setting is None else setting

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def reject_unknown_fields(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        """Refuse keys the schema does not know; identifier-like names get their own code."""
        if not isinstance(original, dict):
            return
        errors: dict[str, list[Problem]] = defaultdict(list)
        for key in original:
            if key in self.fields:
                continue
            name = printable_field_name(key, READ_ONLY_KEYS)
            if isinstance(key, str) and key in READ_ONLY_KEYS:
                errors[name].append(Problem("read_only_field", "is set by the registry and may "
                                                               "not be sent"))
            elif isinstance(key, str) and is_identifier_field_name(key):
                errors[name].append(Problem("prohibited_field", "looks like an identifier; the "
                                                                "registry accepts no identifiers"))
            else:
                errors[name].append(Problem("unknown_field", "is not a field of the record; see "
                                                             "GET /api/v1/dictionary"))
        if errors:
            raise ValidationError(dict(errors))

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def check_record_rules(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        """The rules of record.md that relate several fields, and the inclusion rules."""
        if not isinstance(original, dict):
            return
        errors = check_rules(data, original, self.remission_threshold())
        if errors:
            raise ValidationError(errors)


class RecordSchema(RecordFieldsSchema):
    """A record with its subject_id, as sent to POST /records and in a batch."""

    class Meta(RecordFieldsSchema.Meta):
        pass

    subject_id = SubjectId(required=True, metadata={
        "description": "the site's pseudonym for the patient: random letters (16 or more) or an "
                       "HMAC in letters; no identifier, date or run of 6 digits"})


class PutRecordSchema(RecordFieldsSchema):
    """The body of PUT /records/{subject_id}: subject_id may be repeated, and must then match."""

    class Meta(RecordFieldsSchema.Meta):
        pass

    subject_id = SubjectId(required=False, metadata={
        "description": "optional; when sent it must equal the subject_id of the URL"})


# Every key a record body may name, and the registry's own keys it may not: its words, which an
# error names as they are (printable_field_name reads `age_at_met_dx` like an e-mail).
RECORD_KEYS = frozenset(RecordSchema().fields) | READ_ONLY_KEYS


def check_rules(data: dict[str, Any], original: dict[str, Any],
                min_remission_days: int) -> dict[str, list[Problem]]:
    """Cross-field rules of record.md: the rule table, then the inclusion rules; a rule is
    checked only when its fields are valid."""
    errors: dict[str, list[Problem]] = defaultdict(list)
    for field, problems in check_conditional_rules(data, original).items():
        errors[field].extend(problems)

    def fail(field: str, code: str, message: str) -> None:
        errors[field].append(Problem(code, message))

    def valid(*fields: str) -> bool:  # every field sent and valid
        return all(data.get(field) is not None for field in fields)

    # HER2-positive disease only.
    if valid("her2_ihc", "her2_ish") and not (
            data["her2_ihc"] == "3+" or data["her2_ish"] == "amplified"):
        fail("her2_ihc", "not_her2_positive",
             "the registry includes HER2-positive disease only: her2_ihc 3+ or her2_ish amplified")

    if valid("best_response") and data["best_response"] not in v.REMISSION_RESPONSES:
        fail("best_response", "not_in_remission", "the registry includes patients in remission "
             "only: complete_response or ned_after_local_therapy")

    if valid("last_followup_day"):
        later = [field for field in DAY_FIELDS if field != "last_followup_day"
                 and valid(field) and data[field] > data["last_followup_day"]]
        if later:
            fail("last_followup_day", "day_order",
                 "must be on or after every other day of the record (" + ", ".join(later) + ")")

    given_progression = original.get("progression_day") is not None
    progression_ok = not given_progression or valid("progression_day")
    if valid("remission_start_day", "last_followup_day") and progression_ok:
        end = data.get("progression_day")
        end = data["last_followup_day"] if end is None else end
        length = end - data["remission_start_day"]
        # A remission that ends before it starts is a day_order problem, reported above.
        if 0 <= length < min_remission_days and not (length == 0 and given_progression):
            fail("remission_start_day", "remission_too_short",
                 f"the registry includes remissions of at least {min_remission_days} days: "
                 "(progression_day or last_followup_day) - remission_start_day")
    return dict(errors)


SUBMITTED_FIELDS: tuple[str, ...] = tuple(RecordFieldsSchema().fields)
# Fields holding a list of codes, and the codes each may hold.
LIST_FIELDS: dict[str, tuple[str, ...]] = {
    name: field.choices for name, field in RecordFieldsSchema().fields.items()
    if isinstance(field, CodeList)}


def canonical(data: dict[str, Any]) -> dict[str, Any]:
    """The submitted fields in a fixed form: every field present, absent = None, lists as []."""
    record = {name: data.get(name) for name in SUBMITTED_FIELDS}
    for name in LIST_FIELDS:
        record[name] = record[name] or []
    return record


_schema = RecordSchema()


@lru_cache(maxsize=8)
def _schema_with_threshold(min_remission_days: int) -> RecordSchema:
    return RecordSchema(min_remission_days=min_remission_days)


def validate_record(raw: Any, min_remission_days: int | None = None
                    ) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """Validate one record with subject_id: (canonical data, []) or (None, errors). The
    inclusion threshold is the deployment's unless `min_remission_days` is given (a site tool
    validates with the threshold its registry publishes)."""
    schema = _schema if min_remission_days is None else \
        _schema_with_threshold(min_remission_days)
    try:
        return canonical(schema.load_record(raw)), []
    except ValidationError as error:
        return None, problems_to_list(error.messages)


def remission_threshold() -> int:
    """The inclusion threshold in force (the deployment's setting, else the default)."""
    return _schema.remission_threshold()
