"""The derived fields of record.md: computed by the server from a valid record on every write."""

from __future__ import annotations

from typing import Any, NamedTuple

from registry import vocabulary as v

YEAR = 365.25
ONE_YEAR, TWO_YEARS, THREE_YEARS, FIVE_YEARS, TEN_YEARS = (
    round(n * YEAR) for n in (1, 2, 3, 5, 10)
)

class DerivedField(NamedTuple):
    """How a derived field is published: its kind, its categories (for codes), its meaning."""

    kind: str  # code | boolean | integer
    categories: tuple[str, ...]
    meaning: str


_BOOL = ("true", "false")
# The aggregate catalogue and the published dictionary read this table.
DERIVED_FIELDS: dict[str, DerivedField] = {
    "hr_status": DerivedField("code", v.HR_STATUS,
                              "hormone-receptor status: positive if ER or PR is positive"),
    "visceral_disease": DerivedField("boolean", _BOOL, "metastases in liver, lung, pleura or CNS"),
    "bone_only": DerivedField("boolean", _BOOL, "bone is the only metastatic site"),
    "organ_count_band": DerivedField("code", v.ORGAN_COUNT_BAND,
                                     "number of metastatic sites: 1, 2, 3 or more"),
    "cns_metastases": DerivedField("boolean", _BOOL, "CNS among the metastatic sites"),
    "remission_days": DerivedField("integer", (), "days in remission: (progression or last "
                                                  "follow-up) - remission start"),
    "remission_band": DerivedField("code", v.REMISSION_BAND, "length of remission so far"),
    "trastuzumab_days": DerivedField("integer", (), "days on trastuzumab, not counting an "
                                                    "interruption"),
    "off_trastuzumab_days": DerivedField("integer", (), "after a discontinuation in remission: "
                                                        "days from the stop to progression or "
                                                        "last follow-up; empty when not "
                                                        "discontinued, or when progression came "
                                                        "on or before the stop (the stop was not "
                                                        "a discontinuation in remission)"),
    "off_trastuzumab_band": DerivedField("code", v.OFF_TRASTUZUMAB_BAND,
                                         "time off trastuzumab after a discontinuation in "
                                         "remission (none if not discontinued, or if "
                                         "progression came on or before the stop)"),
    "remission_before_stop_band": DerivedField(
        "code", v.REMISSION_BEFORE_STOP_BAND,
        "after a discontinuation in remission: how long remission had lasted at the stop "
        "(under 2 years, 2 to 5, 5 or more); empty otherwise"),
    "progressed_after_stop": DerivedField("boolean", _BOOL, "after discontinuation: whether the "
                                                            "disease progressed after the stop"),
    "age_band": DerivedField("code", v.AGE_BAND, "age at metastatic diagnosis, in bands"),
    "met_dx_period": DerivedField("code", (), "five-year period of the metastatic diagnosis "
                                              "(1998_2002, 2003_2007, ...)"),
    "ecog_band": DerivedField("code", v.ECOG_BAND, "ECOG performance status at metastatic "
                                                   "diagnosis: 0, 1, 2+ or unknown"),
}


def _band(value: int, limits: tuple[int, ...], names: tuple[str, ...]) -> str:
    for limit, name in zip(limits, names):
        if value < limit:
            return name
    return names[-1]


def met_dx_period(year: int) -> str:
    """The five-year band of a year of metastatic diagnosis (1998_2002, 2003_2007, ...)."""
    start = v.FIRST_MET_DX_YEAR + 5 * ((year - v.FIRST_MET_DX_YEAR) // 5)
    return f"{start}_{start + 4}"


def derive(record: dict[str, Any]) -> dict[str, Any]:
    """The derived fields of a valid record."""
    sites = record["metastatic_sites"]
    er, pr = record["er_status"], record["pr_status"]
    if "positive" in (er, pr):
        hr_status = "positive"
    elif er == pr == "negative":
        hr_status = "negative"
    else:
        hr_status = "unknown"

    last = record["last_followup_day"]
    progression = record.get("progression_day")
    remission_days = (progression if progression is not None else last) - record[
        "remission_start_day"]

    status = record["maintenance_status"]
    start, stop = record["trastuzumab_start_day"], record.get("trastuzumab_stop_day")
    off_days: int | None = None
    off_band = "none"
    before_stop_band: str | None = None
    if status == "discontinued":
        trastuzumab_days = stop - start
        progressed_after_stop: bool | None = progression is not None and progression > stop
        # Clinical ruling: a stop on or after progression was not a discontinuation in
        # remission, so there is no time off trastuzumab in remission (never a negative count).
        if progression is None or progression > stop:
            off_days = (progression if progression is not None else last) - stop
            off_band = _band(off_days, (ONE_YEAR, THREE_YEARS),
                             ("under_1y", "1_to_3y", "3y_plus"))
            before_stop_band = _band(stop - record["remission_start_day"],
                                     (TWO_YEARS, FIVE_YEARS), v.REMISSION_BEFORE_STOP_BAND)
    else:
        trastuzumab_days = last - start
        if status == "interrupted_resumed":
            trastuzumab_days -= record["trastuzumab_resume_day"] - stop
        progressed_after_stop = None

    ecog = record.get("ecog_at_met_dx")
    return {
        "hr_status": hr_status,
        "visceral_disease": any(site in v.VISCERAL_SITES for site in sites),
        "bone_only": sites == ["bone"],
        "organ_count_band": v.ORGAN_COUNT_BAND[min(len(sites), 3) - 1],
        "cns_metastases": "cns" in sites,
        "remission_days": remission_days,
        "remission_band": _band(remission_days, (TWO_YEARS, FIVE_YEARS, TEN_YEARS),
                                v.REMISSION_BAND),
        "trastuzumab_days": trastuzumab_days,
        "off_trastuzumab_days": off_days,
        "off_trastuzumab_band": off_band,
        "remission_before_stop_band": before_stop_band,
        "progressed_after_stop": progressed_after_stop,
        "age_band": _band(record["age_at_met_dx"], (40, 50, 60, 70), v.AGE_BAND),
        "met_dx_period": met_dx_period(record["met_dx_year"]),
        "ecog_band": "unknown" if ecog is None else ("2+" if ecog >= 2 else str(ecog)),
    }
