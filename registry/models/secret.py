"""Secrets the registry draws once, when its database is created, and never shows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base, UtcDateTime, utcnow

class RegistrySecret(Base):
    """A named secret of this registry's database (hex), drawn by a migration and backed up
    with the database. (The noise of aggregate answers needs none: it comes from the records'
    own keys, privacy.md 2.2 item 4.)"""

    __tablename__ = "registry_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
