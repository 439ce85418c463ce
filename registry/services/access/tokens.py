"""Sites and API tokens: registration, issue (shown once), listing, revocation, resolution."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, select, update

from registry.db import first_hot, single_statement, unit_of_work, utcnow
from registry.errors import BadRequest, Conflict, NotFound, RecordInvalid, Unauthenticated
from registry.models import ApiToken, Site
from registry.core.vocabulary import ROLES

TOKEN_PREFIX = "reg"
SITE_CODE = re.compile(r"^[A-Za-z0-9]{2,16}$")
_TOKEN_SHAPE = re.compile(r"^reg_([a-z0-9]{12})_([A-Za-z0-9_-]{40,64})$")
# How stale last_used_at may get before a request refreshes it (saves a write per request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's id, role and (for a submitter) site. Work done by the
    operator on the command line has no token."""

    token_id: int | None
    role: str
    site_id: int | None = None
    site_code: str | None = None
    public_id: str | None = None  # the token's public id, for logs and rate limits


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_site(code: str, name: str) -> Site:
    """Register a partner site under a short code (letters and digits, 2 to 16)."""
    if not SITE_CODE.match(code):
        raise RecordInvalid([{"field": "code", "code": "invalid_format",
                              "message": "a site code is 2 to 16 letters or digits"}])
    with unit_of_work() as session:
        if session.scalar(select(Site.id).where(Site.code == code)) is not None:
            raise Conflict("site_exists", "a site with this code is already registered")
        site = Site(code=code, name=name)
        session.add(site)
        session.flush()
        return site


def list_sites() -> list[Site]:
    """Every registered site, by code."""
    with unit_of_work() as session:
        return list(session.scalars(select(Site).order_by(Site.code)))


def issue_token(role: str, site_code: str | None = None, label: str | None = None
                ) -> tuple[ApiToken, str]:
    """Create a token; returns the stored row and the secret token, which is never stored."""
    if role not in ROLES:
        raise RecordInvalid([{"field": "role", "code": "invalid_choice",
                              "message": "must be one of: " + ", ".join(ROLES)}])
    if (role == "submitter") != (site_code is not None):
        raise RecordInvalid([{"field": "site", "code": "not_allowed_here" if site_code else
                              "required", "message": "a submitter token needs a site; "
                              "coordinator and steward tokens have none"}])
    public_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    with unit_of_work() as session:
        site_id = None
        if site_code is not None:
            site_id = session.scalar(select(Site.id).where(Site.code == site_code))
            if site_id is None:
                raise NotFound("no site with this code; register it with `registry sites add`")
        token = ApiToken(public_id=public_id, secret_sha256=_sha256(secret), role=role,
                         site_id=site_id, label=label)
        session.add(token)
        session.flush()
        session.refresh(token)
        return token, f"{TOKEN_PREFIX}_{public_id}_{secret}"


def list_tokens(site_code: str | None = None) -> list[ApiToken]:
    """Tokens (never their secrets), optionally of one site."""
    with unit_of_work() as session:
        query = select(ApiToken).order_by(ApiToken.id)
        if site_code is not None:
            query = query.join(Site).where(Site.code == site_code)
        return list(session.scalars(query))


def revoke_token(public_id: str) -> ApiToken:
    """Revoke a token by its public id; it fails from the next request on."""
    with unit_of_work() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
        if token is None:
            raise NotFound("no token with this id")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        return token


def set_question_budget(public_id: str, budget: int | None) -> ApiToken:
    """Raise (or, with None, reset to REGISTRY_QUESTION_BUDGET) the distinct aggregate
    questions per release one token may ask (privacy.md 2.3: a steward's decision)."""
    if budget is not None and budget < 1:
        raise BadRequest("the question budget must be at least 1")
    with unit_of_work() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
        if token is None:
            raise NotFound("no token with this id")
        token.question_budget = budget
        return token


# Everything a request needs to know about its token, in one statement (but the public id,
# which it names).
_TOKENS, _SITES = ApiToken.__table__, Site.__table__
_TOKEN_BY_PUBLIC_ID = (
    select(_TOKENS.c.id, _TOKENS.c.secret_sha256, _TOKENS.c.role,
           _TOKENS.c.site_id, _TOKENS.c.last_used_at, _TOKENS.c.revoked_at,
           _SITES.c.code.label("site_code"))
    .select_from(_TOKENS.outerjoin(_SITES, _SITES.c.id == _TOKENS.c.site_id))
    .where(_TOKENS.c.public_id == bindparam("public_id")))
_TOKEN_USED = (update(_TOKENS).where(_TOKENS.c.id == bindparam("token_id"))
               .values(last_used_at=bindparam("now")))


def resolve_token(raw: str) -> Caller:
    """The Caller a bearer token stands for; Unauthenticated if unknown, malformed or revoked.

    Asked of the database on every request (one statement, no transaction), so a revocation
    counts from the next request on."""
    shape = _TOKEN_SHAPE.match(raw)
    if not shape:
        raise Unauthenticated("the bearer token is malformed")
    public_id, secret = shape.groups()
    with single_statement() as connection:
        token = first_hot(connection, _TOKEN_BY_PUBLIC_ID, {"public_id": public_id})
    # Compare hashes in constant time; an unknown id still costs one comparison.
    stored = token.secret_sha256 if token is not None else "0" * 64
    if not hmac.compare_digest(stored, _sha256(secret)) or token is None:
        raise Unauthenticated("the bearer token is not valid")
    if token.revoked_at is not None:
        raise Unauthenticated("the bearer token has been revoked")
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        with single_statement() as connection:
            connection.execute(_TOKEN_USED, {"token_id": token.id, "now": now})
    return Caller(token_id=token.id, role=token.role, site_id=token.site_id,
                  site_code=token.site_code, public_id=public_id)
