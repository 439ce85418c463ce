"""Releases (privacy.md 2.1): frozen, named states of the registry's data that every aggregate
and analysis is computed from.

A release does not copy the registry. Each state of a record that some release holds is stored
once, in `release_records`, with the range of releases it belongs to: from `valid_from` (the
release that first held it) up to, not including, `valid_until` (the first release that holds a
newer state, or none: still current). Cutting a release writes only the records created or
changed since the previous one, and closes the ranges of their old states; a release is the set
of states whose range covers it. Withdrawal erases every state of the record.

That is not the whole of what a release stores: each release also keeps a columnar copy of the
states it holds (`release_columns`, written when it is cut: one row per column the analyses
read, its values as a numpy array's bytes in record order), so that a survival curve, a
log-rank test or a Cox model reads a few arrays instead of scanning and grouping the release
(docs/quality.md B7). Withdrawal deletes the copies of every release that held the record
(services/window/release_columns.py), and the next question writes them again without it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger, Boolean, Column, Enum, ForeignKey, Index, Integer, LargeBinary, String, Table,
    Text, and_, or_,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from registry.db import Base, UtcDateTime, utcnow
from registry.models.record import Record

BigId = BigInteger().with_variant(Integer, "sqlite")
# Columns of a stored record that are bookkeeping of the live table, not part of a release.
_NOT_RELEASED = frozenset({"id", "site_id", "subject_id", "version", "cell_key", "created_at",
                           "updated_at", "submission_digest"})


class Release(Base):
    """One release: when it was cut, by whom, the steward's note, how many records it holds
    and the sum of their keys (both lowered when a patient withdraws)."""

    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(primary_key=True)
    cut_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # The token of the steward who cut it; none when cut with the command line.
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    note: Mapped[str | None] = mapped_column(String(200))
    record_count: Mapped[int]
    # Sum of the held records' keys: a coordinator sees the record count protected as the total
    # of any unfiltered table of the release is (the same records, so the same number).
    record_key_sum: Mapped[int] = mapped_column(BigInteger)
    # Records created, changed or withdrawn since the previous release (at least k).
    changes: Mapped[int]


def _released_columns() -> list[Column]:
    """A typed copy of every clinical column of the record (submitted, list flags, derived).
    Codes are plain strings here: the live table's constraints checked them on the way in."""
    columns = []
    for column in Record.__table__.columns:
        if column.name in _NOT_RELEASED:
            continue
        kind = column.type
        if isinstance(kind, Enum):
            kind = String(kind.length)
        elif isinstance(kind, Boolean):
            kind = Boolean()
        columns.append(Column(column.name, kind, nullable=column.nullable))
    return columns


release_records = Table(
    "release_records", Base.metadata,
    Column("id", BigId, primary_key=True),
    # No foreign key to records: withdrawal erases the states explicitly (and says so).
    Column("record_id", Integer, nullable=False, index=True),
    Column("site_id", ForeignKey("sites.id"), nullable=False),
    Column("version", Integer, nullable=False),
    # The record's perturbation key, drawn once when the record was created and kept for life.
    Column("record_key", Integer, nullable=False),
    Column("valid_from", ForeignKey("releases.id"), nullable=False),
    Column("valid_until", ForeignKey("releases.id"), nullable=True),
    *_released_columns(),
    Index("ix_release_records_valid_until_record_id", "valid_until", "record_id"),
)


# The columnar copy of a release: per column the analyses read, the values of every record state
# the release holds, ordered by record_id, as the bytes of a numpy array (services/
# release_columns.py says which columns and how they are coded).
release_columns = Table(
    "release_columns", Base.metadata,
    Column("release_id", ForeignKey("releases.id"), primary_key=True),
    Column("name", String(40), primary_key=True),
    # A coded column's stored values, as JSON, by code (None: not a coded column).
    Column("domain", Text, nullable=True),
    Column("data", LargeBinary, nullable=False),
)


class ReleasedRecord(Base):
    """One state of a record, held by the releases valid_from <= release < valid_until."""

    __table__ = release_records


def in_release(release_id: int) -> ColumnElement[bool]:
    """The condition selecting the record states that release `release_id` holds."""
    table = release_records
    return and_(table.c.valid_from <= release_id,
                or_(table.c.valid_until.is_(None), table.c.valid_until > release_id))
