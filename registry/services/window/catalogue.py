"""The aggregate catalogue: the dimensions a coordinator may count by, generated from the record
schema (enum fields marked dimension=True) and the code/boolean derived fields of derived.py.

Never a dimension: subject ids, day counts, LVEF values, sex, or the site crossed with anything
(`site` exists for a table of records per site, on its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, true

from registry.core.derived import DERIVED_FIELDS
from registry.core.fields import Code
from registry.core.record import RecordFieldsSchema
from registry.core.vocabulary import met_dx_periods
from registry.models import release_records

# Dimensions count the records of a release (services/window/releases.py), never the live table.
RECORDS = release_records
SITE = "site"
NOT_RECORDED = "not_recorded"  # an optional field left empty
NOT_APPLICABLE = "not_applicable"  # a derived field without a value for this record


@dataclass(frozen=True)
class Dimension:
    """One catalogue dimension: its categories, meaning and the record column it counts."""

    name: str
    meaning: str
    categories: tuple[str, ...]
    boolean: bool = False
    missing: str | None = None  # the category of a NULL column value

    @property
    def column(self) -> Any:
        """The released records' column grouped by."""
        return self.column_in(RECORDS)

    def column_in(self, source: Any) -> Any:
        """The column grouped by, in `source` (the released records table or a selectable
        of its columns)."""
        return source.c.site_id if self.name == SITE else source.c[self.name]

    def label(self, value: Any) -> str:
        """The category of a stored column value."""
        if value is None:
            return self.missing or NOT_RECORDED
        if self.boolean:
            return "true" if value else "false"
        return str(value)

    def condition(self, category: str, source: Any = None) -> ColumnElement[bool]:
        """The SQL condition selecting records of one category (of `source`, by default the
        records table)."""
        column = self.column_in(RECORDS if source is None else source)
        if category == self.missing:
            return column.is_(None)
        if self.boolean:
            return column.is_(true()) if category == "true" else column.is_(False)
        return column == category


def _nullable(name: str) -> bool:
    return bool(RECORDS.c[name].nullable)


def dimensions(site_codes: tuple[str, ...] = ()) -> dict[str, Dimension]:
    """Every dimension of the catalogue, by name (site last, with the registered site codes)."""
    return dict(_dimensions(site_codes, date.today().year))


@lru_cache(maxsize=32)
def _dimensions(site_codes: tuple[str, ...], year: int) -> dict[str, Dimension]:
    """The catalogue for these site codes in this year (built from the record schema once: a
    question asked again must not pay for building it, B4)."""
    catalogue: dict[str, Dimension] = {}
    for name, field in RecordFieldsSchema().fields.items():
        if not (isinstance(field, Code) and field.metadata.get("dimension")):
            continue
        missing = NOT_RECORDED if _nullable(name) else None
        catalogue[name] = Dimension(name, field.metadata["description"],
                                    tuple(field.choices) + ((missing,) if missing else ()),
                                    missing=missing)
    for name, spec in DERIVED_FIELDS.items():
        if spec.kind == "integer":
            continue  # raw day counts are never dimensions
        categories = spec.categories or met_dx_periods(year)
        missing = NOT_APPLICABLE if _nullable(name) else None
        catalogue[name] = Dimension(name, spec.meaning,
                                    tuple(categories) + ((missing,) if missing else ()),
                                    boolean=spec.kind == "boolean", missing=missing)
    catalogue[SITE] = Dimension(SITE, "partner site (records per site, only on its own, for "
                                      "data-completeness monitoring)", tuple(site_codes))
    return catalogue
