"""The REDCap data dictionary a site imports, generated from the record schema.

Conventions (redcap.md): a REDCap field has the registry field's name, except that every `*_day`
field is a date `*_date` (`date_ymd`, an identifier at the site) and `met_dx_year` is collected
as `met_dx_date`, the date of metastatic diagnosis (day 0). Codes become radio buttons, lists
become checkboxes. A choice code is the registry's value when REDCap allows it (letters, digits,
underscore); otherwise `+` is written `plus` ("3+" -> "3plus") and any other character `_`.
The sync reads the site's REDCap through the same table (`redcap_fields()`), so the two sides
cannot drift apart.

The file stays within what REDCap's Data Dictionary upload accepts without a warning (field
names of lowercase letters, digits and underscores, starting with a letter, at most 26
characters) and reads as a REDCap user expects: labels and notes are plain words, never a
registry field name, a code or "null" (`REDCAP_LABELS`, and the plain words of each rule). tests/test_redcap_dictionary.py
applies REDCap's upload checks to the generated file.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import cache

from registry.core.record import DICTIONARY_VERSION, RecordFieldsSchema
from registry.core.dictionary import field_type
from registry.core.rules import branching, plain_words

HEADER = (
    "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
    "Choices, Calculations, OR Slider Labels", "Field Note",
    "Text Validation Type OR Show Slider Number", "Text Validation Min", "Text Validation Max",
    "Identifier?", "Branching Logic (Show field only if...)", "Required Field?",
    "Custom Alignment", "Question Number (surveys only)", "Matrix Group Name", "Matrix Ranking?",
    "Field Annotation",
)
RECORD_ID = "record_id"
MET_DX_DATE = "met_dx_date"
# A descriptive field whose annotation carries the version; found by its tag, not its name, so
# projects that imported the earlier 27-character name `registry_dictionary_version` still sync.
VERSION_FIELD = "registry_dict_version"
VERSION_TAG = "REGISTRY_DICTIONARY_VERSION="
FOLLOW_UP_FORM = "follow_up"
# Instruments, each starting at a field of the schema (in schema order). The follow-up instrument
# may be made repeating (or placed in repeating events); the sync takes its latest visit.
FORM_STARTS = {"met_dx_year": "diagnosis", "first_line_anti_her2": "treatment",
               "progression_day": FOLLOW_UP_FORM}
SECTION_HEADERS = {
    "diagnosis": "Metastatic diagnosis (day 0). Dates stay at the site: the registry receives "
                 "days from the date of metastatic diagnosis and its year only.",
    "treatment": "First-line treatment, remission and trastuzumab maintenance.",
    FOLLOW_UP_FORM: "Follow-up visit. Add one instance per visit: the registry takes the status "
                    "of the latest visit and the earliest progression date.",
}
# Labels for codes whose plain spelling would read badly; every other code reads as itself.
CODE_LABELS = {
    "t_dm1": "T-DM1 (trastuzumab emtansine)", "t_dxd": "T-DXd (trastuzumab deruxtecan)",
    "ct": "CT", "pet_ct": "PET-CT", "mri": "MRI", "cns": "CNS (brain or leptomeningeal)",
    "ned": "NED (no evidence of disease)", "ned_after_local_therapy": "NED after local therapy",
    "trastuzumab_pertuzumab": "trastuzumab + pertuzumab",
    "asymptomatic_lvef_decline": "asymptomatic LVEF decline",
    "interrupted_resumed": "interrupted and resumed", "skin_soft_tissue": "skin or soft tissue",
    "remission_physician_decision": "physician's decision during remission",
    "not_done": "not done", "not_applicable": "not applicable", "de_novo": "de novo",
}
# Labels of fields whose schema description speaks the registry's language (field names, codes,
# "null"), in the words a REDCap user reads on the form. The notes of conditional fields are the
# plain words of their rules (core/rules.py).
REDCAP_LABELS: dict[str, str] = {
    "prior_adjuvant_trastuzumab": "Trastuzumab given in the adjuvant setting before metastasis",
    "ecog_at_met_dx":
        "ECOG performance status at metastatic diagnosis (leave blank if unknown)",
    "later_anti_her2":
        "Anti-HER2 agents given after the first line (leave all unticked if none)",
    "local_therapy_metastases": "Local therapy of metastases (leave all unticked if none)",
    "endocrine_maintenance": "Endocrine maintenance therapy",
    "best_response":
        "Best response to first-line therapy; the registry takes patients with a complete "
        "response or no evidence of disease after local therapy",
    "progression_day": "Date of progression (leave blank if no progression)",
    "last_followup_day":
        "Date of the last follow-up; on or after every other date of the record",
}
# The published dictionary's type of a field -> the kind of REDCap field it becomes.
_KINDS = {"list of codes": "codes", "code": "code", "integer": "integer"}
_REDCAP_CODE = re.compile(r"^[A-Za-z0-9_]+$")


def redcap_code(value: str) -> str:
    """The REDCap choice code of a registry code ("3+" -> "3plus")."""
    if _REDCAP_CODE.match(value):
        return value
    return re.sub(r"[^A-Za-z0-9_]", "_", value.replace("+", "plus"))


def code_label(value: str) -> str:
    """The human-readable label of a code."""
    return CODE_LABELS.get(value, value.replace("_", " "))


@dataclass(frozen=True)
class RedcapField:
    """One REDCap field and the registry field it feeds."""

    name: str  # REDCap variable name
    registry_name: str  # registry field name (met_dx_year for met_dx_date)
    form: str
    kind: str  # date | code | codes | integer
    codes: tuple[tuple[str, str], ...] = ()  # (REDCap code, registry value)
    required: bool = False
    bounds: tuple[int, int] | tuple[()] = ()  # (least, greatest) of a whole number

    def registry_value(self, code: str) -> str | None:
        """The registry value of a REDCap code, or None for a code the dictionary lacks."""
        return dict(self.codes).get(code)


def redcap_name(registry_name: str) -> str:
    """The REDCap variable of a registry field (`*_day` -> `*_date`, met_dx_year -> met_dx_date)."""
    if registry_name == "met_dx_year":
        return MET_DX_DATE
    if registry_name.endswith("_day"):
        return registry_name.removesuffix("_day") + "_date"
    return registry_name


@cache
def redcap_fields() -> tuple[RedcapField, ...]:
    """Every registry field as its REDCap field, in the schema's order."""
    found = []
    form = ""
    for name, field in RecordFieldsSchema().fields.items():
        form = FORM_STARTS.get(name, form)
        target = redcap_name(name)
        kind = "date" if target.endswith("_date") else _KINDS[field_type(field)]
        codes = tuple((redcap_code(value), value) for value in getattr(field, "choices", ()))
        bounds = (field.minimum, field.upper_bound()) if kind == "integer" else ()
        found.append(RedcapField(target, name, form, kind, codes, bool(field.required), bounds))
    return tuple(found)


def checkbox_column(field: str, code: str) -> str:
    """The column of one code of a list field, as REDCap exports it (`field___code`)."""
    return f"{field}___{code.lower()}"


# Columns REDCap adds to an export that the de-identification reads.
REDCAP_COLUMNS = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")


def site_columns() -> dict[str, str]:
    """Every site-side column the registry reads -> its kind (id, redcap, date, code, codes,
    integer): record_id, REDCap's event and repeat columns, and the registry's fields."""
    columns = {RECORD_ID: "id", **{name: "redcap" for name in REDCAP_COLUMNS}}
    for spec in redcap_fields():
        if spec.kind == "codes":
            columns.update({checkbox_column(spec.name, code): "codes" for code, _ in spec.codes})
        else:
            columns[spec.name] = spec.kind
    return columns


def _row(field: RedcapField, section: str) -> dict[str, str]:
    schema_field = RecordFieldsSchema().fields[field.registry_name]
    meta = schema_field.metadata
    description = meta.get("description", field.registry_name)
    row = dict.fromkeys(HEADER, "")
    row["Variable / Field Name"] = field.name
    row["Form Name"] = field.form
    row["Section Header"] = section
    row["Required Field?"] = "y" if field.required else ""
    row["Branching Logic (Show field only if...)"] = branching(field.registry_name, redcap_name,
                                                                 redcap_code)
    notes = []
    if field.kind == "date":
        row["Field Type"] = "text"
        row["Text Validation Type OR Show Slider Number"] = "date_ymd"
        row["Identifier?"] = "y"
        if field.name == MET_DX_DATE:
            description = "date of the diagnosis of metastatic disease (day 0)"
            notes.append("the registry receives its year only; every other date is sent as "
                         "days from this date")
        else:
            description = re.sub(r"^day\b", "date", description)
            notes.append("sent to the registry as days from the metastatic diagnosis date "
                         f"({schema_field.minimum} to {schema_field.upper_bound()})")
    elif field.kind in ("code", "codes"):
        row["Field Type"] = "checkbox" if field.kind == "codes" else "radio"
        row["Choices, Calculations, OR Slider Labels"] = " | ".join(
            f"{code}, {code_label(value)}" for code, value in field.codes)
    else:
        row["Field Type"] = "text"
        row["Text Validation Type OR Show Slider Number"] = "integer"
        row["Text Validation Min"] = str(schema_field.minimum)
        row["Text Validation Max"] = str(schema_field.upper_bound())
        if "unit" in meta:
            notes.append(meta["unit"])
    # A form speaks plain words: each conditional rule's own (core/rules.py), not field names.
    notes.append(plain_words(field.registry_name))
    label = REDCAP_LABELS.get(field.registry_name) or description[:1].upper() + description[1:]
    row["Field Label"] = label
    text = "; ".join(note for note in notes if note)
    row["Field Note"] = text[:1].upper() + text[1:]
    return row


def dictionary_rows() -> list[dict[str, str]]:
    """The rows of the REDCap data dictionary: record_id, the version marker, every field."""
    first = dict.fromkeys(HEADER, "")
    first.update({"Variable / Field Name": RECORD_ID, "Form Name": "diagnosis",
                  "Field Type": "text", "Field Label": "Record ID", "Identifier?": "y",
                  "Field Note": "Never sent: the registry receives a code made from it that "
                                "cannot be turned back into it"})
    version = dict.fromkeys(HEADER, "")
    version.update({"Variable / Field Name": VERSION_FIELD, "Form Name": "diagnosis",
                    "Field Type": "descriptive",
                    "Field Label": f"HER2+ MBC registry data dictionary version "
                                   f"{DICTIONARY_VERSION}",
                    "Field Annotation": f"{VERSION_TAG}{DICTIONARY_VERSION}"})
    rows = [first, version]
    seen_forms: set[str] = set()
    for field in redcap_fields():
        section = "" if field.form in seen_forms else SECTION_HEADERS[field.form]
        seen_forms.add(field.form)
        rows.append(_row(field, section))
    return rows


def dictionary_csv() -> str:
    """The REDCap data dictionary as CSV text, ready for REDCap's Data Dictionary upload."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(dictionary_rows())
    return buffer.getvalue()


def metadata_version(metadata: list[dict[str, str]]) -> str | None:
    """The registry dictionary version recorded in a REDCap project's exported metadata (the
    field annotation that carries the version tag, whatever the field's name)."""
    for row in metadata:
        annotation = row.get("field_annotation", "")
        match = re.search(re.escape(VERSION_TAG) + r"(\S+)", annotation)
        if match:
            return match.group(1)
    return None
