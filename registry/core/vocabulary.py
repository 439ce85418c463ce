"""The registry's closed vocabularies: every allowed code of record.md, listed once.

The record schema, the database constraints, the published dictionaries and the aggregate
catalogue all read these tuples, so a code is added or renamed in exactly one place.
Order matters: it is the order in which choices are published and lists are stored.
"""

SEX = ("female", "male", "unknown")
HER2_IHC = ("0", "1+", "2+", "3+", "not_done", "unknown")
HER2_ISH = ("amplified", "not_amplified", "equivocal", "not_done", "unknown")
HER2_TESTED_ON = ("primary", "metastasis", "both", "unknown")
RECEPTOR_STATUS = ("positive", "negative", "unknown")
HISTOLOGY = ("ductal", "lobular", "mixed", "other", "unknown")
PRESENTATION = ("de_novo", "recurrent")
YES_NO_UNKNOWN = ("yes", "no", "unknown")
YES_NO = ("yes", "no")
METASTATIC_SITES = (
    "bone", "liver", "lung", "pleura", "cns", "distant_lymph_nodes", "skin_soft_tissue", "other",
)
LESION_COUNT = ("single", "two_to_five", "more_than_five", "unknown")
FIRST_LINE_ANTI_HER2 = ("trastuzumab", "trastuzumab_pertuzumab", "other")
FIRST_LINE_CHEMOTHERAPY = ("taxane", "vinorelbine", "capecitabine", "anthracycline", "other", "none")
LATER_ANTI_HER2 = ("t_dm1", "t_dxd", "lapatinib", "tucatinib", "neratinib", "other")
LOCAL_THERAPY_METASTASES = ("surgery", "radiotherapy", "ablation")
ENDOCRINE_MAINTENANCE = ("yes", "no", "not_applicable")
BEST_RESPONSE = (
    "complete_response", "ned_after_local_therapy", "partial_response", "stable_disease",
    "progressive_disease", "not_evaluable",
)
REMISSION_RESPONSES = ("complete_response", "ned_after_local_therapy")
RESPONSE_ASSESSMENT = ("ct", "pet_ct", "mri", "bone_scan", "clinical")
MAINTENANCE_STATUS = ("ongoing", "discontinued", "interrupted_resumed")
DISCONTINUATION_REASON = (
    "remission_physician_decision", "patient_preference", "cardiac_toxicity", "other_toxicity",
    "access_or_cost", "progression", "other", "unknown",
)
CARDIAC_EVENT = ("none", "asymptomatic_lvef_decline", "heart_failure", "unknown")
DISEASE_STATUS = ("ned", "stable", "responding", "progressing", "unknown")
VITAL_STATUS = ("alive", "dead")
CAUSE_OF_DEATH = ("breast_cancer", "other", "unknown")

VISCERAL_SITES = ("liver", "lung", "pleura", "cns")

# Categories of the derived fields (record.md, "Derived fields").
HR_STATUS = RECEPTOR_STATUS
ORGAN_COUNT_BAND = ("1", "2", "3+")
REMISSION_BAND = ("under_2y", "2_to_5y", "5_to_10y", "10y_plus")
OFF_TRASTUZUMAB_BAND = ("none", "under_1y", "1_to_3y", "3y_plus")
# Remission before a discontinuation in remission: stop day - remission start day.
REMISSION_BEFORE_STOP_BAND = ("under_2y", "2_to_5y", "5y_plus")
AGE_BAND = ("18_39", "40_49", "50_59", "60_69", "70_plus")
ECOG_BAND = ("0", "1", "2+", "unknown")
FIRST_MET_DX_YEAR = 1998

# Roles of API tokens (api.md, "Who calls").
ROLES = ("submitter", "coordinator", "steward")
# Where a version came from (a client names it in the header X-Registry-Source).
SOURCES = ("api", "redcap-sync", "spreadsheet")
# Where an audited action came from: a version's source, or the console's own action (a
# withdrawal on My site), which no client can claim.
AUDIT_SOURCES = (*SOURCES, "console")
AUDIT_ACTIONS = ("create", "update", "withdraw")
WITHDRAWAL_REASONS = ("consent_withdrawn", "deleted_at_source", "entered_in_error")


def met_dx_periods(last_year: int) -> tuple[str, ...]:
    """Five-year bands of the year of metastatic diagnosis, from 1998 up to `last_year`."""
    return tuple(
        f"{start}_{start + 4}" for start in range(FIRST_MET_DX_YEAR, last_year + 1, 5)
    )
