"""Sessions of the web console: a registry token exchanged once for a server-side session.

The browser holds only a random session id (in a signed, HttpOnly cookie); the database holds a
SHA-256 hash of it, the token it was opened with, and when it was opened and last used. Every
console request asks the database again (one statement), so a revoked token, sign-out or expiry
ends the session at its next request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, or_, select, update

from registry.db import single_statement, transaction, unit_of_work, utcnow
from registry.errors import ServiceUnavailable
from registry.models import CONSOLE_SECRET, ApiToken, ConsoleSession, RegistrySecret, Site
from registry.services.access.tokens import Caller, resolve_token

# How stale last_seen_at may get before a request refreshes it (saves a write per page).
LAST_SEEN_RESOLUTION = timedelta(seconds=30)


@dataclass(frozen=True)
class Lifetime:
    """How long a console session lives: unused (idle) and in all (absolute)."""

    idle: timedelta
    absolute: timedelta

    @classmethod
    def from_config(cls, config: Any) -> Lifetime:
        """The lifetime set by the app's settings."""
        return cls(idle=timedelta(minutes=config["REGISTRY_CONSOLE_IDLE_MINUTES"]),
                   absolute=timedelta(hours=config["REGISTRY_CONSOLE_MAX_HOURS"]))


class SessionEnded(Exception):
    """The console session is unknown, expired, signed out, or its token was revoked."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_SESSIONS, _TOKENS, _SITES = (ConsoleSession.__table__, ApiToken.__table__, Site.__table__)
_SESSION_BY_KEY = (
    select(_SESSIONS.c.id, _SESSIONS.c.token_id, _SESSIONS.c.created_at,
           _SESSIONS.c.last_seen_at, _TOKENS.c.revoked_at, _TOKENS.c.role, _TOKENS.c.site_id,
           _TOKENS.c.public_id, _SITES.c.code.label("site_code"))
    .select_from(_SESSIONS.join(_TOKENS, _TOKENS.c.id == _SESSIONS.c.token_id)
                 .outerjoin(_SITES, _SITES.c.id == _TOKENS.c.site_id))
    .where(_SESSIONS.c.key_sha256 == bindparam("key_sha256")))
_SESSION_SEEN = (update(_SESSIONS).where(_SESSIONS.c.id == bindparam("session_id"))
                 .values(last_seen_at=bindparam("now")))


def _expired(now: datetime, lifetime: Lifetime) -> Any:
    """Sessions past their idle or absolute end."""
    return or_(_SESSIONS.c.last_seen_at < now - lifetime.idle,
               _SESSIONS.c.created_at < now - lifetime.absolute)


def sign_in(raw_token: str, lifetime: Lifetime) -> tuple[str, Caller]:
    """Open a session for a valid token: returns the session id (for the cookie) and the caller.

    Unauthenticated if the token is unknown, malformed or revoked. Expired sessions of everyone
    are cleared on the way, so the table holds only live ones."""
    caller = resolve_token(raw_token)
    key = secrets.token_urlsafe(32)
    now = utcnow()
    with transaction() as connection:
        connection.execute(delete(_SESSIONS).where(_expired(now, lifetime)))
        connection.execute(_SESSIONS.insert().values(
            key_sha256=_sha256(key), token_id=caller.token_id, created_at=now, last_seen_at=now))
    return key, caller


def resume(key: str, lifetime: Lifetime) -> Caller:
    """The caller of a live session; SessionEnded (and the session deleted) otherwise."""
    with single_statement() as connection:
        found = connection.execute(_SESSION_BY_KEY, {"key_sha256": _sha256(key)}).first()
    if found is None:
        raise SessionEnded("you are signed out")
    now = utcnow()
    if found.revoked_at is not None:
        with single_statement() as connection:  # every session of the token ends
            connection.execute(delete(_SESSIONS).where(_SESSIONS.c.token_id == found.token_id))
        raise SessionEnded("the token of this session has been revoked")
    if now - found.last_seen_at > lifetime.idle or now - found.created_at > lifetime.absolute:
        with single_statement() as connection:
            connection.execute(delete(_SESSIONS).where(_SESSIONS.c.id == found.id))
        raise SessionEnded("your session has expired")
    if now - found.last_seen_at > LAST_SEEN_RESOLUTION:
        with single_statement() as connection:
            connection.execute(_SESSION_SEEN, {"session_id": found.id, "now": now})
    return Caller(token_id=found.token_id, role=found.role, site_id=found.site_id,
                  site_code=found.site_code, public_id=found.public_id)


def sign_out(key: str) -> None:
    """End a session (nothing happens if it has already ended)."""
    with single_statement() as connection:
        connection.execute(delete(_SESSIONS).where(_SESSIONS.c.key_sha256 == _sha256(key)))


def console_secret() -> bytes:
    """The key that signs the console's cookie and CSRF tokens, drawn by the migrations."""
    with unit_of_work(read_only=True) as session:
        value = session.scalar(select(RegistrySecret.value).where(
            RegistrySecret.name == CONSOLE_SECRET))
    if value is None:
        raise ServiceUnavailable("the registry's database is not migrated to the newest "
                                 "revision; the operator must run `registry db upgrade`",
                                 retry_after=60)
    return bytes.fromhex(value)
