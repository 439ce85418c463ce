"""Database access: the declarative base, engine and session set-up, and unit_of_work()."""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from flask import Flask, current_app, g, has_request_context
from sqlalchemy import JSON, DateTime, MetaData, Table, TypeDecorator, create_engine, event, insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from registry import db_sqlite
from registry.db_sqlite import SQLITE_DEFERRED, prepare_sqlite

# Set before the first migration so every constraint has a stable, predictable name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every model; carries the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every database (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        # SQLite stores the wall-clock text: make it UTC first, so comparisons hold.
        if value is not None and value.tzinfo is not None:
            return value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware."""
    return datetime.now(timezone.utc)


# Execution option of the PostgreSQL engine for one-statement work: no BEGIN at all, the
# statement commits by itself (see _prepare_postgresql).
POSTGRES_NO_TRANSACTION = "registry_postgres_no_transaction"
# Key of a pooled PostgreSQL connection's info: it was put in autocommit for such work.
_IN_AUTOCOMMIT = "registry_in_autocommit"


def _use_autocommit(pooled: Any, on: bool) -> None:
    """Put a pooled PostgreSQL connection in psycopg's autocommit mode for one-statement work
    (on), or take it out for a transaction. Only autocommit set here is undone:
    isolation_level="AUTOCOMMIT" (e.g. CREATE DATABASE) stays SQLAlchemy's own. No round trip:
    psycopg's mode is an attribute of the connection while no transaction is open."""
    if on:
        if not pooled.info.get(_IN_AUTOCOMMIT):
            pooled.driver_connection.autocommit = True
            pooled.info[_IN_AUTOCOMMIT] = True
    elif pooled.info.pop(_IN_AUTOCOMMIT, False):
        pooled.driver_connection.autocommit = False


def _prepare_postgresql(engine: Engine) -> None:
    """Let one-statement work (the token check of every request) run in the driver's
    autocommit mode without SQLAlchemy's isolation-level switch and reset.

    A connection begun with POSTGRES_NO_TRANSACTION is put in psycopg's autocommit mode (an
    attribute of the driver's connection, with no round trip: the transaction has sent nothing
    yet), so its statement commits by itself and no BEGIN or COMMIT is sent; it leaves
    autocommit when its next transaction begins or when it returns to the pool. Every other
    transaction is psycopg's own, as
    before (its implicit BEGIN is part of the first statement's execution, so an error there is
    wrapped and a lost connection invalidates the pool as for any statement). SQLAlchemy's
    isolation_level="AUTOCOMMIT" did the same with about 0.04 ms more CPU per request
    (quality.md, "Where a PUT's CPU goes")."""

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A request's connection serves one-statement work, then a transaction, before it
        # returns to the pool (request_connection): each begin sets the mode it needs.
        _use_autocommit(connection.connection,
                        connection.get_execution_options().get(POSTGRES_NO_TRANSACTION, False))

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info.pop(_IN_AUTOCOMMIT, None)
        if dbapi_connection is not None and not dbapi_connection.closed \
                and dbapi_connection.autocommit:
            dbapi_connection.autocommit = False


def make_engine(url: str, *, statement_timeout_ms: int = 0, pool_size: int = 5,
                sqlite_writer_queue: bool = False) -> Engine:
    """Create the engine for `url`: parameters never appear in error messages or logs.
    sqlite_writer_queue: see registry.db_sqlite."""
    parsed = make_url(url)
    options: dict[str, Any] = {"hide_parameters": True, "future": True}
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"check_same_thread": False,
                                   "timeout": db_sqlite.SQLITE_BUSY_TIMEOUT_MS / 1000}
        engine = create_engine(parsed, **options)
        prepare_sqlite(engine, writer_queue=sqlite_writer_queue)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    engine = create_engine(
        parsed,
        # psycopg's own executemany (pipeline mode) beats one giant multi-row INSERT, whose
        # text psycopg would parse again for every batch.
        use_insertmanyvalues=False,
        # No ping before each checkout (a round trip per request): a connection found dead
        # invalidates the whole pool, that request answers 503, and the next ones reconnect.
        pool_pre_ping=False,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=5,
        connect_args=connect_args,
        **options,
    )
    _prepare_postgresql(engine)
    return engine


class Database:
    """The engine and session factories of one app."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session_factory = sessionmaker(bind=engine, expire_on_commit=False)
        # Work of one statement needs no transaction around it: on PostgreSQL it sends no
        # BEGIN (the connection is in the driver's autocommit), which saves the BEGIN and
        # COMMIT round trips. SQLite keeps a transaction (no round trip there), deferred so
        # that a read takes no write lock. Anything with begin() yielding a Connection will do
        # (the tests join their own transaction).
        self.autocommit: Any = engine.execution_options(**{POSTGRES_NO_TRANSACTION: True}) \
            if engine.dialect.name == "postgresql" else \
            engine.execution_options(**{SQLITE_DEFERRED: True})
        self.transactions: Any = engine

    @property
    def dialect(self) -> str:
        """Name of the database dialect: 'sqlite' or 'postgresql'."""
        return self.engine.dialect.name


def init_app(app: Flask) -> Database:
    """Attach a Database built from the app's settings."""
    database = Database(
        make_engine(
            app.config["DATABASE_URL"],
            statement_timeout_ms=app.config["REGISTRY_STATEMENT_TIMEOUT_MS"],
            pool_size=app.config["REGISTRY_DB_POOL_SIZE"],
            sqlite_writer_queue=app.config.get("REGISTRY_SQLITE_WRITER_QUEUE") == "on",
        )
    )
    app.extensions["registry_db"] = database
    app.teardown_request(release_request_connection)
    return database


def get_database() -> Database:
    """The Database of the current app."""
    return current_app.extensions["registry_db"]


@contextmanager
def unit_of_work(*, read_only: bool = False) -> Iterator[Session]:
    """A session in one transaction: committed when the block ends, rolled back on any error.

    read_only: the block only reads. On SQLite its transaction then begins deferred and takes no
    write lock, so it neither waits for a writer nor holds one up (with WAL, reads see the last
    commit)."""
    session = get_database().session_factory()
    try:
        with session.begin():
            if read_only:
                session.connection(execution_options={SQLITE_DEFERRED: True})
            yield session
    finally:
        session.close()


# Keys in flask.g of the connection that serves the current request (request_connection), and
# of whether a block of work holds it (_begun: its transaction may be the driver's alone).
_REQUEST_CONNECTION = "registry_connection"
_REQUEST_CONNECTION_HELD = "registry_connection_held"


def request_connection(database: Database, source: Any) -> Connection | None:
    """PostgreSQL: the pooled connection that serves all the Core work of the current request
    (the token lookup, then the service's transaction), checked out at its first use and
    returned to the pool when the request ends (release_request_connection): one checkout per
    request instead of one per block of work. None outside a request, on SQLite, when `source`
    is not this database's own engine (a test's joined transaction), or while a block of work
    holds the connection (work begun inside another's block gets a connection of its own)."""
    if database.dialect != "postgresql" or not isinstance(source, Engine) \
            or not has_request_context():
        return None
    state = g._get_current_object()
    connection = state.get(_REQUEST_CONNECTION)
    if connection is None or connection.invalidated:
        if connection is not None:
            connection.close()
        connection = database.engine.connect()
        setattr(state, _REQUEST_CONNECTION, connection)
    if state.get(_REQUEST_CONNECTION_HELD) or connection.in_transaction():
        return None
    return connection


def release_request_connection(_error: BaseException | None = None) -> None:
    """teardown_request: the request's connection, if it took one, goes back to the pool."""
    connection = g.pop(_REQUEST_CONNECTION, None)
    if connection is not None:
        connection.close()


@contextmanager
def transaction() -> Iterator[Connection]:
    """unit_of_work() for Core statements, without a Session around them: one transaction on
    one connection, committed when the block ends, rolled back on any error."""
    with _begun(get_database().transactions, autocommit=False) as connection:
        yield connection


@contextmanager
def single_statement() -> Iterator[Connection]:
    """A connection for one statement, atomic on its own (a read, or a write that needs nothing
    else): on PostgreSQL it commits by itself. Not a read followed by a write: SQLite, which
    begins this deferred, may refuse a write after a read when another writer came between."""
    with _begun(get_database().autocommit, autocommit=True) as connection:
        yield connection


@contextmanager
def _begun(source: Any, *, autocommit: bool) -> Iterator[Connection]:
    """A transaction on the request's connection (request_connection); without one, begun on a
    connection of `source` itself (Database.autocommit for one-statement work, `autocommit`).

    On the request's connection the transaction is psycopg's own, begun by the driver with the
    first statement, as SQLAlchemy's would be (psycopg's BEGIN is implicit), but without
    SQLAlchemy's transaction object, its begin event and its execution options: the statements
    of execute_hot() go straight to the driver's cursor (_run_hot), and the block ends with
    the Connection's own COMMIT or ROLLBACK, which fire the engine's events and wrap errors as
    any statement's. A Core statement executed in the block begins SQLAlchemy's transaction
    on the same driver transaction (autobegin), and the block then ends it. With
    `autocommit` the connection is in autocommit (_use_autocommit): each statement commits by
    itself, and nothing is left to commit."""
    connection = request_connection(get_database(), source)
    if connection is None:
        with source.begin() as connection:
            yield connection
        return
    state = g._get_current_object()
    if autocommit:
        # A Core statement in the block begins SQLAlchemy's transaction: the option keeps
        # it in autocommit (_on_begin).
        connection.execution_options(**{POSTGRES_NO_TRANSACTION: True})
    _use_autocommit(connection.connection, autocommit)
    setattr(state, _REQUEST_CONNECTION_HELD, True)
    try:
        try:
            yield connection
        except BaseException:
            begun = connection.get_transaction()
            if begun is not None:
                begun.rollback()
            elif not autocommit and _driver_in_transaction(connection):
                # SQLAlchemy's ROLLBACK: events, wrapped errors. A driver error has rolled
                # back already (SQLAlchemy's own, when no transaction of its is open).
                connection._rollback_impl()
            raise
        begun = connection.get_transaction()
        if begun is not None:
            begun.commit()
        elif not autocommit:
            connection._commit_impl()  # SQLAlchemy's COMMIT: events, wrapped errors
    finally:
        state.pop(_REQUEST_CONNECTION_HELD, None)
        if autocommit:
            connection.execution_options(**{POSTGRES_NO_TRANSACTION: False})


def _driver_in_transaction(connection: Connection) -> bool:
    """Whether the PostgreSQL driver connection under `connection` holds an open transaction
    (also one failed by an error), i.e. has something to roll back."""
    from psycopg.pq import TransactionStatus

    return not connection.invalidated and \
        connection.connection.driver_connection.info.transaction_status != TransactionStatus.IDLE


_COMPILED: dict[tuple[int, str], tuple[str, dict[str, Any], type]] = {}


def _compiled(statement: Any, dialect: Any) -> tuple[str, dict[str, Any], type]:
    """The SQL of `statement` for `dialect`, the bind processor of each of its parameters that
    has one (its type's, as SQLAlchemy applies it), and a named tuple of its result columns,
    compiled once."""
    key = (id(statement), dialect.name)
    found = _COMPILED.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect)
        processors = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                      for name, bind in compiled.binds.items()}
        found = _COMPILED[key] = (
            compiled.string,
            {name: processor for name, processor in processors.items() if processor},
            namedtuple("HotRow", statement.exported_columns.keys()))
    return found


def _run_hot(connection: Connection, statement: Any, parameters: dict[str, Any]
             ) -> tuple[Any, type]:
    """PostgreSQL: run a Core statement compiled once (_compiled), with its types' bind
    processing, on a cursor of the connection's driver connection; (the cursor, the named
    tuple of its rows). SQLAlchemy's Connection runs it as it runs its dialect's own
    statements (_cursor_execute): the engine's before_cursor_execute and after_cursor_execute
    events see it, and a driver error is wrapped as for any statement (hide_parameters
    honoured), a lost connection invalidating the connection and the pool (_handle_dbapi_
    exception); no execution context, result object or cache key is built."""
    sql, processors, row = _compiled(statement, connection.dialect)
    cursor = connection.connection.driver_connection.cursor()
    connection._cursor_execute(cursor, sql, {
        name: processors[name](value) if name in processors else value
        for name, value in parameters.items()})
    return cursor, row


def execute_hot(connection: Connection, statement: Any, parameters: dict[str, Any]) -> None:
    """Execute a Core statement of every request's path that returns no rows (a PUT's write):
    on PostgreSQL on the driver's cursor (_run_hot), the same SQL and parameters as
    connection.execute(); other databases: connection.execute()."""
    if connection.dialect.name != "postgresql":
        connection.execute(statement, parameters)
        return
    _run_hot(connection, statement, parameters)[0].close()


def first_hot(connection: Connection, statement: Any, parameters: dict[str, Any]) -> Any:
    """The first row of a Core statement of every request's path (the token lookup, a PUT's
    row lock), or None: on PostgreSQL a named tuple of its columns read from the driver's
    cursor (_run_hot), not type-processed: the statements given here return only types the
    driver already converts (integers, text, booleans, JSON, timestamps with their zone).
    Other databases: connection.execute(...).first()."""
    if connection.dialect.name != "postgresql":
        return connection.execute(statement, parameters).first()
    cursor, row = _run_hot(connection, statement, parameters)
    found = cursor.fetchone()
    cursor.close()
    return None if found is None else row._make(found)


# From this many rows on, PostgreSQL inserts go through COPY, an order of magnitude faster than
# executemany for the wide rows of a batch.
COPY_THRESHOLD = 50


def bulk_insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows that all have the same keys, within the connection's transaction."""
    if not rows:
        return
    if connection.dialect.name != "postgresql" or len(rows) < COPY_THRESHOLD:
        connection.execute(insert(table), rows)
        return
    names = list(rows[0])
    as_json = {name for name in names if isinstance(table.c[name].type, JSON)}
    columns = ", ".join(f'"{name}"' for name in names)
    with connection.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([json.dumps(row[name]) if name in as_json else row[name]
                                for name in names])
