"""What happened to records: their versions, withdrawal tombstones and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Enum, ForeignKey, Index, Integer, String, UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base, UtcDateTime, utcnow
from registry.core.vocabulary import AUDIT_ACTIONS, AUDIT_SOURCES, SOURCES, WITHDRAWAL_REASONS

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigId = BigInteger().with_variant(Integer, "sqlite")


def _source(values: tuple[str, ...]) -> Any:
    return mapped_column(
        Enum(*values, name="source", native_enum=False, create_constraint=True, length=16)
    )


class RecordVersion(Base):
    """One state of a record, as written; erased with the record on withdrawal."""

    __tablename__ = "record_versions"
    __table_args__ = (UniqueConstraint("record_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))
    version: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    source: Mapped[str] = _source(SOURCES)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    # Names of the fields that differ from the previous version (all fields for version 1).
    changed_fields: Mapped[list[str]] = mapped_column(JSON)
    # The submitted fields of this version, so any past state can be reconstructed.
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Tombstone(Base):
    """What remains of a withdrawn record: who it was at which site, when and why; no data."""

    __tablename__ = "tombstones"
    __table_args__ = (UniqueConstraint("site_id", "subject_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    subject_id: Mapped[str] = mapped_column(String(64))
    withdrawn_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    reason: Mapped[str] = mapped_column(
        Enum(*WITHDRAWAL_REASONS, name="reason", native_enum=False, create_constraint=True,
             length=24)
    )


class AuditEntry(Base):
    """Append-only log of every change: who, when, which record, what kind, which fields; never
    a value of the record."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_site_id_subject_id", "site_id", "subject_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    subject_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(
        Enum(*AUDIT_ACTIONS, name="action", native_enum=False, create_constraint=True, length=16)
    )
    source: Mapped[str] = _source(AUDIT_SOURCES)
    version: Mapped[int | None]
    changed_fields: Mapped[list[str]] = mapped_column(JSON)


class QueryLogEntry(Base):
    """One aggregate question: who asked what, of which release, and what was released."""

    __tablename__ = "query_log"
    __table_args__ = (
        # A user's distinct questions of one release (the question budget) and their repeats.
        Index("ix_query_log_token_id_release_id_query", "token_id", "release_id", "query"),
        # An answered question of a release, to answer it again without counting.
        Index("ix_query_log_release_id_query", "release_id", "query"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    asked_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"))
    # The normalised question: the same for every rewording of the same table.
    query: Mapped[str] = mapped_column(String(500))
    release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    # The data state of questions asked before releases existed (migration 0003); else none.
    snapshot: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    released: Mapped[dict[str, Any] | None] = mapped_column(JSON)
