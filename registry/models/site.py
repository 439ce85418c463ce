"""Partner sites (cancer centres) that submit records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base, UtcDateTime, utcnow


class Site(Base):
    """A participating centre, known by a short code such as TOR."""

    __tablename__ = "sites"
    __table_args__ = (CheckConstraint("length(code) BETWEEN 2 AND 16", name="code_length"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
