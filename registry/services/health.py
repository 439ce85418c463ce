"""Readiness: the database answers and its schema is at the newest migration."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from registry.db import get_database, unit_of_work
from registry.errors import ServiceUnavailable

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """The alembic configuration of the registry's migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def newest_revision() -> str:
    """The head revision of the migrations shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def readiness() -> dict[str, str]:
    """Check the database and its schema revision; ServiceUnavailable if either is not ready."""
    head = newest_revision()
    try:
        with unit_of_work(read_only=True) as session:
            current = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        raise ServiceUnavailable("the database does not answer, or has not been migrated") \
            from None
    if current != head:
        raise ServiceUnavailable("the database schema is not at the newest migration; run "
                                 "`registry db upgrade`")
    return {"status": "ready", "database": get_database().dialect, "schema_revision": current}
