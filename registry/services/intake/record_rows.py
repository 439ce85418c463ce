"""The one mapping between a record (its canonical form, registry/core) and its row in the
records table: which columns a record sets, their values, and the record a row holds.

Lists of codes are one boolean column per code (models/record.py); every other submitted or
derived field is the column of its name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from registry.core.derived import DERIVED_FIELDS, derive
from registry.core.record import LIST_FIELDS, SUBMITTED_FIELDS
from registry.models import Record, flag_column

RECORDS = Record.__table__
# The columns that hold the submitted fields, and those of the derived fields.
SUBMITTED_COLUMNS: tuple[str, ...] = (
    *(name for name in SUBMITTED_FIELDS if name not in LIST_FIELDS),
    *(flag_column(name, code) for name, codes in LIST_FIELDS.items() for code in codes))
DERIVED_COLUMNS: tuple[str, ...] = tuple(DERIVED_FIELDS)
# The columns a write sets from the record (the keys of row_values()).
ROW_COLUMNS: tuple[str, ...] = SUBMITTED_COLUMNS + DERIVED_COLUMNS


def row_values(record: dict[str, Any], derived: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """Column values of a canonical record, derived fields included (computed if not given)."""
    values = {name: value for name, value in record.items() if name not in LIST_FIELDS}
    for name, codes in LIST_FIELDS.items():
        chosen = set(record[name])
        values.update({flag_column(name, code): code in chosen for code in codes})
    values.update(derive(record) if derived is None else derived)
    return values


def record_from_row(row: Any) -> dict[str, Any]:
    """The canonical submitted fields of a stored row (ORM object or Core row)."""
    get = row._mapping.__getitem__ if isinstance(row, Row) else row.__getattribute__
    record = {name: get(name) for name in SUBMITTED_FIELDS if name not in LIST_FIELDS}
    for name, codes in LIST_FIELDS.items():
        record[name] = [code for code in codes if get(flag_column(name, code))]
    return {name: record[name] for name in SUBMITTED_FIELDS}


def derived_from_row(row: Any) -> dict[str, Any]:
    """The derived fields as a row stores them."""
    return {name: getattr(row, name) for name in DERIVED_FIELDS}


def changes_between(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Field-by-field differences of two canonical records."""
    return {name: {"old": old[name], "new": new[name]}
            for name in SUBMITTED_FIELDS if old[name] != new[name]}
