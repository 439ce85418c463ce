"""Rate limiting per token (Flask-Limiter): 429 with Retry-After and X-RateLimit-* headers.

The check runs after authentication, so the key is the verified token; requests without a token
(the public contract) are keyed by client address. Storage is memory:// for one process, or a
shared store (redis://...) when several processes or instances serve the API.
"""

from __future__ import annotations

from flask import Flask, Response, g, request
from flask_limiter import Limiter

from registry.auth import API_PREFIX


def rate_limit_key() -> str:
    """Whom a request counts against: its token, or its client address."""
    caller = g.get("caller")
    if caller is not None and caller.public_id is not None:
        return f"token:{caller.public_id}"
    return f"address:{request.remote_addr or 'unknown'}"


def _exempt() -> bool:
    # Health checks, metrics and the docs page serve load balancers and operators, not clients.
    return not request.path.startswith(API_PREFIX + "/")


def _remember_retry_after(response: Response) -> Response:
    g.own_retry_after = response.headers.get("Retry-After")
    return response


def _retry_after_only_when_limited(response: Response) -> Response:
    # Flask-Limiter writes Retry-After on every response: give an answer that set its own (a
    # 503, the question budget's 429) back what it had, and keep the limiter's for its own 429.
    own = g.pop("own_retry_after", None)
    if own is not None:
        response.headers["Retry-After"] = own
    elif response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def init_app(app: Flask) -> Limiter:
    """Attach the limiter. Call after auth, so that its check runs after authentication."""
    # after_request hooks run last-registered first: these two wrap the limiter's header hook.
    app.after_request(_retry_after_only_when_limited)
    setting = app.config["REGISTRY_RATE_LIMIT"].strip()
    limiter = Limiter(
        rate_limit_key,
        app=app,
        default_limits=[setting] if setting.lower() != "off" else [],
        default_limits_exempt_when=_exempt,
        storage_uri=app.config["REGISTRY_RATE_LIMIT_STORAGE"],
        headers_enabled=True,
        retry_after="delta-seconds",
        strategy="fixed-window",
        key_prefix="registry",
        enabled=setting.lower() != "off",
    )
    app.after_request(_remember_retry_after)
    app.extensions["registry_limiter"] = limiter
    return limiter
