"""API tokens: only a SHA-256 hash of the secret is ever stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from registry.db import Base, UtcDateTime, utcnow
from registry.models.site import Site
from registry.core.vocabulary import ROLES


class ApiToken(Base):
    """A bearer token with one role; a submitter token is bound to one site."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint(
            "(role = 'submitter') = (site_id IS NOT NULL)", name="submitter_has_site"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The public part of the token (shown by `tokens list`, used to revoke); not a secret.
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(
        Enum(*ROLES, name="role", native_enum=False, create_constraint=True, length=16)
    )
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Distinct aggregate questions per release this token may ask, when a steward raised it
    # above REGISTRY_QUESTION_BUDGET for one user (privacy.md 2.3); none: the setting.
    question_budget: Mapped[int | None]

    site: Mapped[Site | None] = relationship(lazy="joined")
