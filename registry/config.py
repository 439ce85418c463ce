"""Settings from the environment, with defaults that run out of the box on SQLite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from registry.core.record import read_threshold_from

# Every setting the registry reads, its default and what it means. The README's settings table and
# `registry settings` are produced from this list; keep the meaning to one line.
SETTINGS: tuple[tuple[str, Any, str], ...] = (
    ("DATABASE_URL", None,
     "SQLAlchemy URL; default: SQLite file instance/registry.db. PostgreSQL: postgresql+psycopg://..."),
    ("REGISTRY_MIN_REMISSION_DAYS", 730, "inclusion rule: minimum length of remission in days"),
    ("REGISTRY_MAX_BATCH", 1000, "most records accepted in one POST /records/batch"),
    ("REGISTRY_MAX_BODY_BYTES", 4 * 1024 * 1024,
     "largest request body; larger ones answer 413 before parsing"),
    ("REGISTRY_MIN_CELL_COUNT", 11, "smallest published aggregate count (never below 5)"),
    ("REGISTRY_PERTURBATION", "on", "cell-key perturbation of aggregate counts: on or off"),
    ("REGISTRY_QUESTION_BUDGET", 300,
     "distinct aggregate questions one user may ask of one release (repeats are free)"),
    ("REGISTRY_RELEASE_MIN_DAYS", 30, "days at least between two releases (demo and tests: 0)"),
    ("REGISTRY_PUBLIC_URL", "https://registry.invalid",
     "base of the problem type URIs in error bodies"),
    ("REGISTRY_STATEMENT_TIMEOUT_MS", 15000, "PostgreSQL statement timeout for each request"),
    ("REGISTRY_DB_POOL_SIZE", 5, "database connections kept open per worker (PostgreSQL)"),
    ("REGISTRY_SQLITE_WRITER_QUEUE", "on",
     "SQLite: writers wait for each other on a file lock beside the database (up to the busy "
     "timeout, then 503) instead of asking for SQLite's write lock every few ms; 'off' to "
     "disable (docs/quality.md, B3)"),
    ("REGISTRY_LOG_LEVEL", "INFO", "log level of the registry's JSON logs"),
    ("REGISTRY_CONSOLE_IDLE_MINUTES", 30,
     "web console: a session unused this long ends (sign in again)"),
    ("REGISTRY_CONSOLE_MAX_HOURS", 12,
     "web console: a session ends this long after sign-in, however busy"),
    ("REGISTRY_FOLLOW_UP_DUE_DAYS", 365,
     "web console, My site: a record not updated for more than this many days is listed as "
     "due for follow-up (1 to 3650; the page can ask for another period)"),
    ("REGISTRY_RATE_LIMIT", "1200 per minute",
     "requests one token may make; several limits separated by ';'; 'off' switches every "
     "rate limit off"),
    ("REGISTRY_ADDRESS_RATE_LIMIT", "60 per minute",
     "API requests one client address may make without a valid token (none, unknown or "
     "revoked: this paces token guessing); 'off' to disable"),
    ("REGISTRY_RATE_LIMIT_STORAGE", None,
     "where rate-limit counters live, shared by every process that serves: redis://host:6379 "
     "for several instances; default: a file shared by the gunicorn workers (shipped config), "
     "memory:// in one process"),
    ("REGISTRY_RATE_LIMIT_PREFIX", "registry",
     "prefix of the rate-limit keys (registries sharing one Redis each need their own)"),
    ("REGISTRY_TRUSTED_PROXIES", 0,
     "reverse proxies in front of the app whose X-Forwarded-For/-Proto to trust (nginx: 1)"),
    # Read by deploy/gunicorn.conf.py (the server), not by the app.
    ("REGISTRY_BIND", "0.0.0.0:8000", "gunicorn: address and port to listen on"),
    ("REGISTRY_WORKERS", None, "gunicorn: worker processes; default: 2 per CPU core"),
    ("REGISTRY_THREADS", 4, "gunicorn: threads per worker"),
    ("REGISTRY_WORKER_TIMEOUT", 60, "gunicorn: seconds before a silent worker is restarted"),
    ("REGISTRY_MAX_REQUESTS", 20000, "gunicorn: requests after which a worker is recycled"),
    ("REGISTRY_FORWARDED_ALLOW_IPS", "127.0.0.1,::1",
     "gunicorn: proxies whose X-Forwarded-Proto is trusted"),
    ("PROMETHEUS_MULTIPROC_DIR", None,
     "gunicorn: folder where workers share metrics; default: a fresh temporary folder"),
)


def settings_table() -> str:
    """The settings as a Markdown table (setting, default, meaning), as in the README."""
    lines = ["| setting | default | meaning |", "|---|---|---|"]
    for name, default, meaning in SETTINGS:
        shown = "(none)" if default is None else f"`{default}`"
        lines.append(f"| `{name}` | {shown} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _coerce(default: Any, raw: str) -> Any:
    """Turn an environment string into the type of the setting's default."""
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    return raw


def default_database_url(instance_path: str) -> str:
    """The SQLite file used when no DATABASE_URL is set."""
    Path(instance_path).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(instance_path) / 'registry.db'}"


def settings_from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Read every registry setting from the environment, falling back to its default."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, default, _meaning in SETTINGS:
        raw = environ.get(name)
        if raw is None or raw == "":
            values[name] = default
        elif default is None:
            values[name] = raw
        else:
            try:
                values[name] = _coerce(default, raw)
            except ValueError as exc:
                raise SystemExit(f"setting {name} must be a whole number") from exc
    return values


def check_settings(values: dict[str, Any]) -> None:
    """Refuse settings that would break a promise of the registry."""
    if values["REGISTRY_MIN_CELL_COUNT"] < 5:
        raise SystemExit("REGISTRY_MIN_CELL_COUNT may not be below 5 (privacy.md section 2)")
    if values["REGISTRY_PERTURBATION"] not in ("on", "off"):
        raise SystemExit("REGISTRY_PERTURBATION must be 'on' or 'off'")
    if values["REGISTRY_SQLITE_WRITER_QUEUE"] not in ("on", "off"):
        raise SystemExit("REGISTRY_SQLITE_WRITER_QUEUE must be 'on' or 'off'")
    if values["REGISTRY_QUESTION_BUDGET"] < 1 or values["REGISTRY_RELEASE_MIN_DAYS"] < 0:
        raise SystemExit("REGISTRY_QUESTION_BUDGET must be at least 1 and "
                         "REGISTRY_RELEASE_MIN_DAYS at least 0")
    if values["REGISTRY_MAX_BATCH"] < 1:
        raise SystemExit("REGISTRY_MAX_BATCH must be at least 1")
    if values["REGISTRY_CONSOLE_IDLE_MINUTES"] < 1 or values["REGISTRY_CONSOLE_MAX_HOURS"] < 1:
        raise SystemExit("REGISTRY_CONSOLE_IDLE_MINUTES and REGISTRY_CONSOLE_MAX_HOURS must be "
                         "at least 1")
    if not 1 <= values["REGISTRY_FOLLOW_UP_DUE_DAYS"] <= 3650:
        raise SystemExit("REGISTRY_FOLLOW_UP_DUE_DAYS must be from 1 to 3650")
    _check_rate_limit("REGISTRY_RATE_LIMIT", values["REGISTRY_RATE_LIMIT"])
    _check_rate_limit("REGISTRY_ADDRESS_RATE_LIMIT", values["REGISTRY_ADDRESS_RATE_LIMIT"])
    storage = values["REGISTRY_RATE_LIMIT_STORAGE"]
    if storage and not storage.startswith(_RATE_LIMIT_STORAGES):
        raise SystemExit("REGISTRY_RATE_LIMIT_STORAGE must start with one of: "
                         + ", ".join(_RATE_LIMIT_STORAGES))


_RATE_LIMIT_STORAGES = ("memory://", "sqlite:///", "redis://", "rediss://", "redis+sentinel://",
                        "redis+cluster://", "memcached://", "mongodb://")


def _check_rate_limit(name: str, setting: str) -> None:
    """Refuse a rate limit that the limiter could not parse (fail at start, not per request)."""
    from limits import parse_many

    if setting.strip().lower() == "off":
        return
    try:
        parse_many(setting)
    except ValueError:
        raise SystemExit(f"{name} must be like '1200 per minute' (or 'off')") from None


def _threshold_of_current_app() -> int | None:
    from flask import current_app, has_app_context

    return int(current_app.config["REGISTRY_MIN_REMISSION_DAYS"]) if has_app_context() else None


def use_app_settings_in_core() -> None:
    """Let the record core read the inclusion threshold from the running app's settings."""
    read_threshold_from(_threshold_of_current_app)
