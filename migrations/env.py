"""Alembic environment: migrates the database the registry's settings point at."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate import rewriter
from alembic.operations import ops

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


# Autogenerate's fix-ups, so that a generated migration runs as it is written.
fix_ups = rewriter.Rewriter()


@fix_ups.rewrites(ops.DropColumnOp)
def drop_check_constraint_first(context, revision, op):  # noqa: ANN001, ANN201
    """Drop a coded column's check constraint before the column: SQLite's table copy would
    otherwise keep the constraint on a column it no longer has (a record field's downgrade)."""
    column = op.to_column()
    if isinstance(column.type, sa.Enum) and column.type.create_constraint and column.type.name:
        name = target_metadata.naming_convention["ck"] % {
            "table_name": op.table_name, "constraint_name": column.type.name}
        return [ops.DropConstraintOp(sa.sql.elements.conv(name), op.table_name,
                                     type_="check", schema=op.schema), op]
    return op


def run_migrations(connection) -> None:
    """Run the migrations on an open connection."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
        process_revision_directives=fix_ups,
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
