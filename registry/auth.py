"""Who is calling: bearer token -> Caller. The only reader of the Authorization header.

Every /api/v1 endpoint declares the action it performs with @requires(Action...) or is marked
@public; an endpoint with neither is refused (fail closed). Which roles may perform an action is
registry/permissions.py's table, which the services check too. Authentication and the role
check run before the body is parsed, so a caller without the right never learns what the body
would have met.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Request, current_app, g, request

from registry.errors import Forbidden, Unauthenticated
from registry.permissions import Action, authorize
from registry.services.access.tokens import Caller, resolve_token

F = TypeVar("F", bound=Callable[..., Any])
API_PREFIX = "/api/v1"
# flask-smorest's blueprint serving openapi.json: the contract is public.
PUBLIC_BLUEPRINTS = frozenset({"api-docs"})


def requires(action: Action) -> Callable[[F], F]:
    """Mark a view as performing `action`: open to the roles the permission table allows."""

    def mark(view: F) -> F:
        view._registry_action = action  # type: ignore[attr-defined]
        return view

    return mark


def public(view: F) -> F:
    """Mark a view as open without a token."""
    view._registry_public = True  # type: ignore[attr-defined]
    return view


def current_caller() -> Caller:
    """The authenticated caller of this request."""
    return g.caller


def _bearer_token(current: Request) -> str:
    header = current.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send the header Authorization: Bearer <token>")
    return token.strip()


def authenticate_request() -> None:
    """before_request: resolve the token and check the endpoint's roles."""
    current = request._get_current_object()  # once: each use of the proxy looks it up again
    if not current.path.startswith(API_PREFIX) or current.endpoint is None \
            or current.blueprint in PUBLIC_BLUEPRINTS:
        return
    view = current_app.view_functions.get(current.endpoint)
    if getattr(view, "_registry_public", False):
        return
    caller = resolve_token(_bearer_token(current))
    g.caller = caller
    action = getattr(view, "_registry_action", None)
    if action is None:
        raise Forbidden("this endpoint declares no permission")
    authorize(caller.role, action)


def init_app(app: Flask) -> None:
    """Install the authentication hook."""
    app.before_request(authenticate_request)
