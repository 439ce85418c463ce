"""The derived fields of record.md: computed by the server from a valid record on every write.

Each derived field is declared once, by the function that computes it; its meaning, categories
and whether it may be empty travel with it to the dictionary, the catalogue and the columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from registry.core import vocabulary as v

YEAR = 365.25
ONE_YEAR, TWO_YEARS, THREE_YEARS, FIVE_YEARS, TEN_YEARS = (
    round(n * YEAR) for n in (1, 2, 3, 5, 10)
)

class DerivedField(NamedTuple):
    """One derived field: how it is published and stored, and how it is computed."""

    kind: str  # code | boolean | integer
    categories: tuple[str, ...]
    meaning: str
    compute: Callable[[dict[str, Any]], Any]
    nullable: bool = False  # may be empty (None) for some records


_BOOL = ("true", "false")
# Every derived field, in the order of record.md. The aggregate catalogue, the published
# dictionary, the API's schema and the database columns all read this table.
DERIVED_FIELDS: dict[str, DerivedField] = {}


def _derived(name: str, kind: str, meaning: str, categories: tuple[str, ...] = (),
             nullable: bool = False) -> Callable[[Callable[[dict[str, Any]], Any]], Any]:
    """Declare a derived field by the function that computes it from a valid record."""

    def declare(compute: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
        categories_ = _BOOL if kind == "boolean" else categories
        DERIVED_FIELDS[name] = DerivedField(kind, categories_, meaning, compute, nullable)
        return compute

    return declare


def _band(value: int, limits: tuple[int, ...], names: tuple[str, ...]) -> str:
    for limit, name in zip(limits, names):
        if value < limit:
            return name
    return names[-1]


def met_dx_period(year: int) -> str:
    """The five-year band of a year of metastatic diagnosis (1998_2002, 2003_2007, ...)."""
    start = v.FIRST_MET_DX_YEAR + 5 * ((year - v.FIRST_MET_DX_YEAR) // 5)
    return f"{start}_{start + 4}"


def _end_of_remission(record: dict[str, Any]) -> int:
    """Progression, or the last follow-up when there was none."""
    progression = record.get("progression_day")
    return record["last_followup_day"] if progression is None else progression


@_derived("hr_status", "code", "hormone-receptor status: positive if ER or PR is positive",
          v.HR_STATUS)
def _hr_status(record: dict[str, Any]) -> str:
    er, pr = record["er_status"], record["pr_status"]
    if "positive" in (er, pr):
        return "positive"
    return "negative" if er == pr == "negative" else "unknown"


@_derived("visceral_disease", "boolean", "metastases in liver, lung, pleura or CNS")
def _visceral_disease(record: dict[str, Any]) -> bool:
    return any(site in v.VISCERAL_SITES for site in record["metastatic_sites"])


@_derived("bone_only", "boolean", "bone is the only metastatic site")
def _bone_only(record: dict[str, Any]) -> bool:
    return record["metastatic_sites"] == ["bone"]


@_derived("organ_count_band", "code", "number of metastatic sites: 1, 2, 3 or more",
          v.ORGAN_COUNT_BAND)
def _organ_count_band(record: dict[str, Any]) -> str:
    return v.ORGAN_COUNT_BAND[min(len(record["metastatic_sites"]), 3) - 1]


@_derived("cns_metastases", "boolean", "CNS among the metastatic sites")
def _cns_metastases(record: dict[str, Any]) -> bool:
    return "cns" in record["metastatic_sites"]


@_derived("remission_days", "integer",
          "days in remission: (progression or last follow-up) - remission start")
def _remission_days(record: dict[str, Any]) -> int:
    return _end_of_remission(record) - record["remission_start_day"]


@_derived("remission_band", "code", "length of remission so far", v.REMISSION_BAND)
def _remission_band(record: dict[str, Any]) -> str:
    return _band(_remission_days(record), (TWO_YEARS, FIVE_YEARS, TEN_YEARS), v.REMISSION_BAND)


@_derived("trastuzumab_days", "integer", "days on trastuzumab, not counting an interruption")
def _trastuzumab_days(record: dict[str, Any]) -> int:
    start, stop = record["trastuzumab_start_day"], record.get("trastuzumab_stop_day")
    status = record["maintenance_status"]
    if status == "discontinued":
        return stop - start
    days = record["last_followup_day"] - start
    if status == "interrupted_resumed":
        days -= record["trastuzumab_resume_day"] - stop
    return days


def _discontinued_in_remission(record: dict[str, Any]) -> bool:
    """Clinical ruling: a stop on or after progression was not a discontinuation in remission,
    so it has no time off trastuzumab in remission (never a negative count)."""
    if record["maintenance_status"] != "discontinued":
        return False
    progression = record.get("progression_day")
    return progression is None or progression > record["trastuzumab_stop_day"]


@_derived("off_trastuzumab_days", "integer", "after a discontinuation in remission: days from "
          "the stop to progression or last follow-up; empty when not discontinued, or when "
          "progression came on or before the stop (the stop was not a discontinuation in "
          "remission)", nullable=True)
def _off_trastuzumab_days(record: dict[str, Any]) -> int | None:
    if not _discontinued_in_remission(record):
        return None
    return _end_of_remission(record) - record["trastuzumab_stop_day"]


@_derived("off_trastuzumab_band", "code", "time off trastuzumab after a discontinuation in "
          "remission (none if not discontinued, or if progression came on or before the stop)",
          v.OFF_TRASTUZUMAB_BAND)
def _off_trastuzumab_band(record: dict[str, Any]) -> str:
    days = _off_trastuzumab_days(record)
    if days is None:
        return "none"
    return _band(days, (ONE_YEAR, THREE_YEARS), ("under_1y", "1_to_3y", "3y_plus"))


@_derived("remission_before_stop_band", "code", "after a discontinuation in remission: how long "
          "remission had lasted at the stop (under 2 years, 2 to 5, 5 or more); empty otherwise",
          v.REMISSION_BEFORE_STOP_BAND, nullable=True)
def _remission_before_stop_band(record: dict[str, Any]) -> str | None:
    if not _discontinued_in_remission(record):
        return None
    return _band(record["trastuzumab_stop_day"] - record["remission_start_day"],
                 (TWO_YEARS, FIVE_YEARS), v.REMISSION_BEFORE_STOP_BAND)


@_derived("progressed_after_stop", "boolean", "after discontinuation: whether the disease "
          "progressed after the stop", nullable=True)
def _progressed_after_stop(record: dict[str, Any]) -> bool | None:
    if record["maintenance_status"] != "discontinued":
        return None
    progression = record.get("progression_day")
    return progression is not None and progression > record["trastuzumab_stop_day"]


@_derived("age_band", "code", "age at metastatic diagnosis, in bands", v.AGE_BAND)
def _age_band(record: dict[str, Any]) -> str:
    return _band(record["age_at_met_dx"], (40, 50, 60, 70), v.AGE_BAND)


@_derived("met_dx_period", "code", "five-year period of the metastatic diagnosis "
          "(1998_2002, 2003_2007, ...)")
def _met_dx_period(record: dict[str, Any]) -> str:
    return met_dx_period(record["met_dx_year"])


@_derived("ecog_band", "code", "ECOG performance status at metastatic diagnosis: 0, 1, 2+ or "
          "unknown", v.ECOG_BAND)
def _ecog_band(record: dict[str, Any]) -> str:
    ecog = record.get("ecog_at_met_dx")
    return "unknown" if ecog is None else ("2+" if ecog >= 2 else str(ecog))


def derive(record: dict[str, Any]) -> dict[str, Any]:
    """The derived fields of a valid record."""
    return {name: spec.compute(record) for name, spec in DERIVED_FIELDS.items()}
