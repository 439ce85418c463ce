"""Rate limits (the `limits` library): per token, and per client address for everything else.

Two budgets, both fixed windows in one storage shared by every process that serves the API
(Redis for several instances; under the shipped gunicorn config without Redis, a SQLite file
the workers share, see registry.ratelimit_storage; memory:// only in a single process):
- every request with a valid token spends one from the token's budget (REGISTRY_RATE_LIMIT),
  counted after authentication;
- every API request without a valid token (none, unknown, revoked, malformed, or the public
  contract) spends one from its client address's budget (REGISTRY_ADDRESS_RATE_LIMIT). An
  address whose budget is spent gets 429 before its token is even looked at, so guessing tokens
  runs at that pace and no faster. A request without any token spends before it is served (the
  limit is exact); one with a token that fails spends when it is answered, so the requests then
  in flight may pass the limit by the server's concurrency.
The client address is the socket's peer, or nginx's X-Forwarded-For only when
REGISTRY_TRUSTED_PROXIES says a proxy is in front; an IPv6 client counts as its /64 network.
Over a budget: 429 problem+json with Retry-After; every limited answer carries X-RateLimit-Limit,
-Remaining and -Reset. If the storage fails, requests pass (logged): the limits protect the
service, they must not take it down.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string

import registry.ratelimit_storage  # noqa: F401  (registers the sqlite:// scheme)
from registry.auth import API_PREFIX
from registry.errors import TooManyRequests

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Standing:
    """Where a caller stands against its tightest limit."""

    limit: int
    remaining: int
    reset: float  # Unix time the window ends
    allowed: bool


def parse_limit(setting: str) -> list[RateLimitItem]:
    """The limits of a setting such as '1200 per minute' or '10/second;600/hour' ('off': none)."""
    setting = setting.strip()
    return [] if setting.lower() == "off" else parse_many(setting)


class RateLimiter:
    """The two budgets over one storage."""

    def __init__(self, storage: Storage, prefix: str, per_token: list[RateLimitItem],
                 per_address: list[RateLimitItem]) -> None:
        self.storage = storage
        self.prefix = prefix
        self.budgets = {"token": per_token, "address": per_address}

    def _key(self, item: RateLimitItem, budget: str, who: str) -> str:
        return item.key_for(self.prefix, budget, who)

    def spend(self, budget: str, who: str) -> Standing | None:
        """Count one request against every limit of the budget; None if it has none."""
        standings = []
        for item in self.budgets[budget]:
            key = self._key(item, budget, who)
            count = self.storage.incr(key, item.get_expiry())
            standings.append(Standing(item.amount, max(0, item.amount - count),
                                      self.storage.get_expiry(key), count <= item.amount))
        return _tightest(standings)

    def standing(self, budget: str, who: str) -> Standing | None:
        """Where the budget stands, without spending; None if it has no limit."""
        standings = []
        for item in self.budgets[budget]:
            key = self._key(item, budget, who)
            count = self.storage.get(key)
            reset = self.storage.get_expiry(key) if count else time.time() + item.get_expiry()
            standings.append(Standing(item.amount, max(0, item.amount - count), reset,
                                      count < item.amount))
        return _tightest(standings)


def _tightest(standings: list[Standing]) -> Standing | None:
    if not standings:
        return None
    refused = [standing for standing in standings if not standing.allowed]
    if refused:
        return max(refused, key=lambda standing: standing.reset)
    return min(standings, key=lambda standing: standing.remaining)


def client_address() -> str:
    """Whom a request without a valid token counts against: its address (IPv6: the /64)."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        # Not an address (a forwarded header that is not one): one budget for all such, and no
        # text a client chose in the counters' keys.
        return "(not an address)"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _limiter() -> RateLimiter | None:
    return current_app.extensions.get("registry_limiter")


def _limited() -> bool:
    # Health checks, metrics and the docs page serve load balancers and operators, not clients.
    return request.path.startswith(API_PREFIX + "/")


def _safely(spend_or_look: Callable[..., Standing | None], *args: str) -> Standing | None:
    try:
        return spend_or_look(*args)
    except Exception as error:  # noqa: BLE001  (any storage failure: serve, and say so)
        log.warning("rate-limit storage unavailable", extra={"error_class": type(error).__name__})
        return None


def _refuse(standing: Standing) -> None:
    g.rate_standing = standing
    retry = max(1, math.ceil(standing.reset - time.time()))
    raise TooManyRequests(f"too many requests; retry after {retry} seconds",
                          headers={"Retry-After": str(retry)})


def before_authentication() -> None:
    """before_request, ahead of authentication: an address over its budget is refused before
    its token is looked at; a request with no token at all spends from it now."""
    limiter = _limiter()
    if limiter is None or not _limited():
        return
    if "Authorization" in request.headers:
        standing = _safely(limiter.standing, "address", client_address())
    else:
        standing = _safely(limiter.spend, "address", client_address())
        g.rate_address_spent = True
    if standing is not None:
        g.rate_standing = standing
        if not standing.allowed:
            _refuse(standing)


def after_authentication() -> None:
    """before_request, after authentication: a valid token spends from its own budget."""
    limiter = _limiter()
    caller = g.get("caller")
    if limiter is None or not _limited() or caller is None or caller.public_id is None:
        return
    standing = _safely(limiter.spend, "token", caller.public_id)
    if standing is not None:
        g.rate_standing = standing
        if not standing.allowed:
            _refuse(standing)


def after_response(response: Response) -> Response:
    """after_request: an API request that had no valid token spends from its address (if it
    has not yet), and every limited answer says where its caller stands."""
    limiter = _limiter()
    if limiter is None or not _limited():
        return response
    caller = g.get("caller")
    if (caller is None or caller.public_id is None) and not g.get("rate_address_spent"):
        standing = _safely(limiter.spend, "address", client_address())
        if standing is not None and response.status_code != 429:
            g.rate_standing = standing
    standing = g.get("rate_standing")
    if standing is not None:
        response.headers["X-RateLimit-Limit"] = str(standing.limit)
        response.headers["X-RateLimit-Remaining"] = str(standing.remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(standing.reset))
    return response


def _forget_standing() -> None:
    # Under the test client several requests share one app context, hence one `g`.
    for name in ("rate_standing", "rate_address_spent"):
        g.pop(name, None)


def init_app(app: Flask) -> RateLimiter | None:
    """Attach the limiter: call before auth.init_app (its first check runs ahead of
    authentication), and init_token_limit after it."""
    per_token = parse_limit(app.config["REGISTRY_RATE_LIMIT"])
    per_address = parse_limit(app.config["REGISTRY_ADDRESS_RATE_LIMIT"])
    if not per_token and app.config["REGISTRY_RATE_LIMIT"].strip().lower() == "off":
        return None  # 'off' switches every limit off, and with them every hook of this module
    uri = app.config["REGISTRY_RATE_LIMIT_STORAGE"] or "memory://"
    prefix = app.config["REGISTRY_RATE_LIMIT_PREFIX"]
    # In a shared Redis every key of this registry starts with its prefix.
    options = {"key_prefix": prefix} if uri.startswith("redis") else {}
    limiter = RateLimiter(storage_from_string(uri, **options), prefix, per_token, per_address)
    app.extensions["registry_limiter"] = limiter
    app.before_request(_forget_standing)
    app.before_request(before_authentication)
    app.after_request(after_response)
    return limiter


def init_token_limit(app: Flask) -> None:
    """Count verified tokens: call after auth.init_app (and after init_app, which decides
    whether there is a limiter)."""
    if "registry_limiter" in app.extensions:
        app.before_request(after_authentication)


def refuse_spent_address() -> None:
    """429 for a client address that has spent its budget of tries without a valid token (the
    console's sign-in form paces token guessing as the API does)."""
    limiter = _limiter()
    if limiter is None:
        return
    standing = _safely(limiter.standing, "address", client_address())
    if standing is not None and not standing.allowed:
        _refuse(standing)


def spend_address() -> None:
    """Count one try without a valid token (a refused sign-in) against the client's address."""
    limiter = _limiter()
    if limiter is not None:
        _safely(limiter.spend, "address", client_address())
