"""Secrets the registry draws once, when its database is created, and never shows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base, UtcDateTime, utcnow

# The key that draws the noise of every aggregate answer (services/disclosure.py, NoiseDraw).
PERTURBATION_SECRET = "perturbation"


class RegistrySecret(Base):
    """A named secret of this registry's database (hex). Created by the migrations; backed up
    and restored with the database, so that restored data answers as before."""

    __tablename__ = "registry_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
