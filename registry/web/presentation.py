"""How the console words and lays out what the services return (no rules, no data access)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_YEARS = re.compile(r"^(\d{4})_(\d{4})$")
_AGES = re.compile(r"^(\d{1,2})_(\d{1,2})$")
_WORDS = {"true": "yes", "false": "no", "ned": "NED", "ct": "CT", "pet_ct": "PET-CT",
          "mri": "MRI", "cns": "CNS", "t_dm1": "T-DM1", "t_dxd": "T-DXd",
          "de_novo": "de novo", "interrupted_resumed": "interrupted and resumed"}
_ACRONYMS = {"lvef": "LVEF", "her2": "HER2", "cns": "CNS", "ecog": "ECOG", "ihc": "IHC",
             "ish": "ISH"}
_OUTCOMES = {"answered": "answered", "refused": "refused (cohort too small)",
             "limit_reached": "refused (asked too often)"}


def category_label(code: str) -> str:
    """A category code in words: 2_to_5y -> 2 to 5 years, 18_39 -> 18-39, true -> yes."""
    if code in _WORDS:
        return _WORDS[code]
    for pattern in (_YEARS, _AGES):
        match = pattern.match(code)
        if match:
            return f"{match.group(1)}\u2013{match.group(2)}"
    text = " ".join(_ACRONYMS.get(word, word) for word in code.split("_"))
    text = re.sub(r"(\d+)y\b", r"\1 years", text)
    text = re.sub(r"\bplus$", "or more", text)
    return text


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def shows_code(code: str) -> bool:
    """Whether a category's label says more than its code with spaces (then show both)."""
    return category_label(code).lower() != code.replace("_", " ").lower()


def dimension_meaning(entry: dict[str, Any]) -> str:
    """A catalogue dimension's whole meaning, capitalised."""
    return _capitalised(entry["meaning"])


def dimension_title(entry: dict[str, Any]) -> str:
    """A catalogue dimension's meaning cut to a title: without the remark after ';' or '(', and
    without a list of its values after ':' (hr_status -> Hormone-receptor status)."""
    title = re.split(r";| \(|, in bands", entry["meaning"])[0]
    head, colon, rest = title.partition(":")
    if colon and ("," in rest or " if " in rest):
        title = head
    return _capitalised(title.strip())


def in_sentence(title: str) -> str:
    """A title inside a sentence: first letter lowered, unless it begins an acronym (HER2)."""
    if len(title) > 1 and title[1].isupper():
        return title
    return title[:1].lower() + title[1:]


def outcome_label(outcome: str) -> str:
    """A query-log outcome in words."""
    return _OUTCOMES.get(outcome, outcome.replace("_", " "))


@dataclass(frozen=True)
class Grid:
    """A count table laid out for HTML: body rows with their cells and total, and a totals row."""

    row_dimension: str
    column_dimension: str | None
    columns: list[str]
    rows: list[tuple[str, list[dict[str, Any]], dict[str, Any] | None]]
    column_totals: list[dict[str, Any]]
    total: dict[str, Any]


def count_grid(table: dict[str, Any]) -> Grid:
    """Lay out a count table answer (one- or two-way) as rows x columns with margins."""
    row_dim, col_dim = table["rows"], table["columns"]
    total = {"count": table["total"], "suppressed": table["total"] is None}
    if not col_dim:
        return Grid(row_dim, None, [], [(cell[row_dim], [cell], None) for cell in table["cells"]],
                    [], total)
    columns = [entry[col_dim] for entry in table["column_totals"]]
    width = len(columns)
    cells = table["cells"]
    rows = [(row_total[row_dim], cells[i * width:(i + 1) * width], row_total)
            for i, row_total in enumerate(table["row_totals"])]
    return Grid(row_dim, col_dim, columns, rows, table["column_totals"], total)


def disclosure_sentences(disclosure: dict[str, Any]) -> list[str]:
    """The disclosure block of an answer in words."""
    k = disclosure["min_cell_count"]
    perturbed = "cell_key_perturbation" in disclosure["method"]
    sentences = [f"No count from 1 to {k - 1} is published: such counts are withheld and shown "
                 f"as \u201cfewer than {k}\u201d. A few larger counts may be withheld as well, so "
                 "that a withheld count cannot be worked out from the totals; the registry does "
                 "not say which cells those are."]
    if perturbed:
        sentences.append("Every published count, totals included, has been moved by at most 2 "
                         "up or down (cell-key perturbation), the same way every time the same "
                         "records are counted. Cells therefore need not add up exactly to their "
                         "totals.")
    else:
        sentences.append("Counts are not perturbed: published cells add up to their totals, "
                         "except where a count is withheld.")
    sites = disclosure["contributing_sites"]
    sentences.append(f"{sites} sites contributed records to this table." if sites is not None
                     else "Too few sites contributed to this table to say how many.")
    return sentences
