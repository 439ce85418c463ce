"""Alembic environment: migrates the database the registry's settings point at."""

from __future__ import annotations

from alembic import context

import registry.models  # noqa: F401  (registers every table on Base.metadata)
from registry.config import settings_from_environment
from registry.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    """The URL given by the caller, else DATABASE_URL, else the default SQLite file."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    url = settings_from_environment()["DATABASE_URL"]
    if url:
        return url
    from registry import create_app

    return create_app().config["DATABASE_URL"]


def run_migrations(connection) -> None:
    """Run the migrations on an open connection."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate through a connection passed in by the caller, or one opened here."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(database_url())
    with engine.connect() as connection:
        run_migrations(connection)
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_online()
