"""Sessions of the web console: a token pasted once, exchanged for a server-side session."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base, UtcDateTime, utcnow

# The key that signs the console's cookie and its CSRF tokens (registry_secrets.name).
CONSOLE_SECRET = "console"


class ConsoleSession(Base):
    """A signed-in browser. Only a SHA-256 hash of the session id (held by the cookie) is stored;
    the token it was opened with is referenced, never kept."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
