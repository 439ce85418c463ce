"""The registry record: one patient at one site, every field of record.md in a typed column.

The columns of the submitted and derived fields are generated from the record schema and the
derived-field table (registry/core), so a new field needs no edit here. Lists of codes
(metastatic sites, later anti-HER2 drugs, local therapy) are stored as one boolean column per
code, named `<field>_<code>`, so they are typed, constrained and countable in SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry.core.derived import DERIVED_FIELDS
from registry.core.fields import Code, CodeList
from registry.core.record import LIST_FIELDS, RecordFieldsSchema
from registry.db import Base, UtcDateTime, utcnow

__all__ = ["CELL_KEY_MODULUS", "LIST_FIELDS", "Record", "flag_column"]
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
    return mapped_column(Boolean, nullable=False, default=False)


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


def _record_columns() -> dict[str, Any]:
    """A typed column for every submitted field (a boolean per code of a list) and every derived
    field, generated from the record schema and the derived-field table."""
    columns: dict[str, Any] = {}
    for name, field in RecordFieldsSchema().fields.items():
        if isinstance(field, CodeList):
            columns.update({flag_column(name, code): _flag() for code in field.choices})
        elif isinstance(field, Code):
            columns[name] = _code(name, field.choices, nullable=not field.required)
        else:
            columns[name] = mapped_column(Integer, nullable=not field.required)
    for name, spec in DERIVED_FIELDS.items():
        if spec.kind == "boolean":
            columns[name] = mapped_column(Boolean, nullable=spec.nullable)
        elif spec.kind == "integer":
            columns[name] = mapped_column(Integer, nullable=spec.nullable)
        elif spec.categories:
            columns[name] = _code(name, spec.categories, nullable=spec.nullable)
        else:  # the open-ended bands of met_dx_period (1998_2002, ...)
            columns[name] = mapped_column(String(9), nullable=spec.nullable)
    return columns


# SQLAlchemy's declarative mapping takes columns added to a mapped class after its definition.
for _name, _column in _record_columns().items():
    setattr(Record, _name, _column)
