"""The registry record: one patient at one site, every field of record.md in a typed column.

Lists of codes (metastatic sites, later anti-HER2 drugs, local therapy) are stored as one boolean
column per code, named `<field>_<code>`, so they are typed, constrained and countable in SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry import vocabulary as v
from registry.db import Base, UtcDateTime, utcnow

# Fields holding a list of codes, and the codes each may hold.
LIST_FIELDS: dict[str, tuple[str, ...]] = {
    "metastatic_sites": v.METASTATIC_SITES,
    "later_anti_her2": v.LATER_ANTI_HER2,
    "local_therapy_metastases": v.LOCAL_THERAPY_METASTASES,
}


# Cell keys are drawn uniformly from 0 .. CELL_KEY_MODULUS - 1 (privacy.md section 2, property 4).
CELL_KEY_MODULUS = 256


def flag_column(field: str, code: str) -> str:
    """Name of the boolean column that says whether list `field` holds `code`."""
    return f"{field}_{code}"


def _code(name: str, values: tuple[str, ...], nullable: bool = False) -> Any:
    return mapped_column(
        Enum(*values, name=name, native_enum=False, create_constraint=True,
             length=max(len(x) for x in values)),
        nullable=nullable,
    )


def _flag() -> Any:
    return mapped_column(default=False)


class Record(Base):
    """The current state of one patient's record; its past states are RecordVersion rows."""

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("site_id", "subject_id"),
        Index("ix_records_site_id_id", "site_id", "id"),
        Index("ix_records_site_id_updated_at", "site_id", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    subject_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    # Secret random key of the record for cell-key perturbation (privacy.md section 2, property 4).
    cell_key: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # SHA-256 of the last accepted batch submission as sent, under the rules then in force: a
    # resent identical record is recognised as unchanged without validating it again.
    submission_digest: Mapped[str | None] = mapped_column(String(64))

    # Submitted fields, in the order of record.md.
    met_dx_year: Mapped[int]
    age_at_met_dx: Mapped[int]
    sex: Mapped[str] = _code("sex", v.SEX)
    her2_ihc: Mapped[str] = _code("her2_ihc", v.HER2_IHC)
    her2_ish: Mapped[str] = _code("her2_ish", v.HER2_ISH)
    her2_tested_on: Mapped[str | None] = _code("her2_tested_on", v.HER2_TESTED_ON, True)
    er_status: Mapped[str] = _code("er_status", v.RECEPTOR_STATUS)
    pr_status: Mapped[str] = _code("pr_status", v.RECEPTOR_STATUS)
    histology: Mapped[str | None] = _code("histology", v.HISTOLOGY, True)
    presentation: Mapped[str] = _code("presentation", v.PRESENTATION)
    primary_dx_day: Mapped[int | None]
    prior_adjuvant_trastuzumab: Mapped[str] = _code("prior_adjuvant_trastuzumab", v.YES_NO_UNKNOWN)
    metastatic_sites_bone: Mapped[bool] = _flag()
    metastatic_sites_liver: Mapped[bool] = _flag()
    metastatic_sites_lung: Mapped[bool] = _flag()
    metastatic_sites_pleura: Mapped[bool] = _flag()
    metastatic_sites_cns: Mapped[bool] = _flag()
    metastatic_sites_distant_lymph_nodes: Mapped[bool] = _flag()
    metastatic_sites_skin_soft_tissue: Mapped[bool] = _flag()
    metastatic_sites_other: Mapped[bool] = _flag()
    lesion_count: Mapped[str | None] = _code("lesion_count", v.LESION_COUNT, True)
    ecog_at_met_dx: Mapped[int | None]
    first_line_anti_her2: Mapped[str] = _code("first_line_anti_her2", v.FIRST_LINE_ANTI_HER2)
    first_line_chemotherapy: Mapped[str] = _code(
        "first_line_chemotherapy", v.FIRST_LINE_CHEMOTHERAPY
    )
    later_anti_her2_t_dm1: Mapped[bool] = _flag()
    later_anti_her2_t_dxd: Mapped[bool] = _flag()
    later_anti_her2_lapatinib: Mapped[bool] = _flag()
    later_anti_her2_tucatinib: Mapped[bool] = _flag()
    later_anti_her2_neratinib: Mapped[bool] = _flag()
    later_anti_her2_other: Mapped[bool] = _flag()
    local_therapy_metastases_surgery: Mapped[bool] = _flag()
    local_therapy_metastases_radiotherapy: Mapped[bool] = _flag()
    local_therapy_metastases_ablation: Mapped[bool] = _flag()
    primary_tumour_surgery: Mapped[str | None] = _code("primary_tumour_surgery", v.YES_NO, True)
    endocrine_maintenance: Mapped[str] = _code("endocrine_maintenance", v.ENDOCRINE_MAINTENANCE)
    trastuzumab_start_day: Mapped[int]
    best_response: Mapped[str] = _code("best_response", v.BEST_RESPONSE)
    remission_start_day: Mapped[int]
    response_assessment: Mapped[str | None] = _code(
        "response_assessment", v.RESPONSE_ASSESSMENT, True
    )
    maintenance_status: Mapped[str] = _code("maintenance_status", v.MAINTENANCE_STATUS)
    trastuzumab_stop_day: Mapped[int | None]
    discontinuation_reason: Mapped[str | None] = _code(
        "discontinuation_reason", v.DISCONTINUATION_REASON, True
    )
    trastuzumab_resume_day: Mapped[int | None]
    lvef_baseline_pct: Mapped[int | None]
    lvef_nadir_pct: Mapped[int | None]
    cardiac_event: Mapped[str] = _code("cardiac_event", v.CARDIAC_EVENT)
    progression_day: Mapped[int | None]
    disease_status_last: Mapped[str] = _code("disease_status_last", v.DISEASE_STATUS)
    last_followup_day: Mapped[int]
    vital_status: Mapped[str] = _code("vital_status", v.VITAL_STATUS)
    cause_of_death: Mapped[str | None] = _code("cause_of_death", v.CAUSE_OF_DEATH, True)

    # Derived fields (record.md), computed by the server on every write.
    hr_status: Mapped[str] = _code("hr_status", v.HR_STATUS)
    visceral_disease: Mapped[bool]
    bone_only: Mapped[bool]
    organ_count_band: Mapped[str] = _code("organ_count_band", v.ORGAN_COUNT_BAND)
    cns_metastases: Mapped[bool]
    remission_days: Mapped[int]
    remission_band: Mapped[str] = _code("remission_band", v.REMISSION_BAND)
    trastuzumab_days: Mapped[int]
    off_trastuzumab_days: Mapped[int | None]
    off_trastuzumab_band: Mapped[str] = _code("off_trastuzumab_band", v.OFF_TRASTUZUMAB_BAND)
    remission_before_stop_band: Mapped[str | None] = _code(
        "remission_before_stop_band", v.REMISSION_BEFORE_STOP_BAND, True)
    progressed_after_stop: Mapped[bool | None]
    age_band: Mapped[str] = _code("age_band", v.AGE_BAND)
    met_dx_period: Mapped[str] = mapped_column(String(9))
    ecog_band: Mapped[str] = _code("ecog_band", v.ECOG_BAND)
