"""The HER2+ MBC prolonged-remission registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the record core and the site tools import this package without Flask
    from flask import Flask

__version__ = "1.0.0"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the WSGI application: settings, database, auth, API, console, error handlers."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    from flask import Flask

    from registry import api, auth, cli, db, errors, observability, ratelimit, web
    from registry.config import (
        check_settings, default_database_url, settings_from_environment, use_app_settings_in_core,
    )

    app = Flask(__name__, instance_relative_config=True)
    app.config.update(settings_from_environment())
    app.config.update(config or {})
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = default_database_url(app.instance_path)
    check_settings(app.config)
    use_app_settings_in_core()
    app.config["MAX_CONTENT_LENGTH"] = app.config["REGISTRY_MAX_BODY_BYTES"]
    app.config.update(api.api_settings(__version__))

    proxies = app.config["REGISTRY_TRUSTED_PROXIES"]
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore

    observability.init_app(app)  # first: every later hook and error sees the request id
    db.init_app(app)
    ratelimit.init_app(app)  # before auth: a spent address is refused before its token is read
    auth.init_app(app)
    ratelimit.init_token_limit(app)  # after auth: a verified token spends its own budget
    api.init_app(app)
    web.init_app(app)  # the console at /, on the same services
    errors.register_error_handlers(app)
    cli.init_app(app)
    return app
