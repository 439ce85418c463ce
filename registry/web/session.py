"""The console's cookie: a signed, HttpOnly, SameSite=Strict cookie holding only the session id and
the CSRF nonce (and, until shown, the one-line message of the last action, which never holds a
pseudonym, token or value). Who is signed in, and until when, is kept server-side
(services/console_sessions).

The API never reads it (it takes bearer tokens only), nor do health checks, metrics, the API docs
or static assets: for those paths no session is opened at all.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from registry.auth import API_PREFIX
from registry.services.access.console_sessions import console_secret

COOKIE_NAME = "registry_console"
ASSETS_PATH = "/assets"
# Paths that are not the console's pages: no cookie is read or written for them.
_NOT_CONSOLE = (API_PREFIX + "/", API_PREFIX, "/docs", "/healthz", "/readyz", "/metrics",
                ASSETS_PATH + "/")


def is_console_path(path: str) -> bool:
    """Whether a request path is one of the console's pages (which have sessions)."""
    return not path.startswith(_NOT_CONSOLE)


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, limited to the console's pages, signed with the database's
    console secret, and marked Secure whenever the request came over HTTPS."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """No session (a null one) outside the console's pages."""
        if not is_console_path(request.path):
            return None
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> Any:
        """Load the signing key from the database the first time a cookie is read or written."""
        if not app.secret_key:
            app.secret_key = console_secret()
        return super().get_signing_serializer(app)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure behind HTTPS (a proxy's X-Forwarded-Proto counts with REGISTRY_TRUSTED_PROXIES),
        so that plain http on loopback (make run) still works."""
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure
