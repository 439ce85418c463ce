"""SQLite as the registry relies on it: transactions that begin IMMEDIATE for writes and
deferred for reads, writers that ask again for the write lock at most 4 ms apart, and the
writers' queue (a file lock beside the database, waited for up to the busy timeout)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

# Execution option of the SQLite engine for one-statement work: its transaction starts with a
# plain (deferred) BEGIN, which takes no lock before its statement does.
SQLITE_DEFERRED = "registry_sqlite_deferred"
# How long a statement waits for a lock another connection holds (the busy timeout), and the
# first and longest pause of a writer between two asks for the write lock.
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_WRITE_RETRY_S = (0.001, 0.004)


def _begin_immediate(connection: Connection) -> None:
    """BEGIN IMMEDIATE, asked again at most 4 ms apart while another writer holds the lock.

    SQLite's own busy handler sleeps longer and longer between tries (up to 100 ms), so under
    steady writes a writer that lost a few times sleeps through the moments the lock is free and
    waits a second while later ones go first (B3 on SQLite: p99 1,040 ms; with this, 145 ms).
    Its busy handler is off for this statement only; the wait ends in the same error. The
    wait gives up at the deadline the writers' queue set (its wait and this one share the
    busy timeout), or after the busy timeout."""
    give_up = connection.connection.info.pop(_WRITE_DEADLINE, None)
    if give_up is None:
        give_up = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    connection.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        pause = SQLITE_WRITE_RETRY_S[0]
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as error:
                code = getattr(error.orig, "sqlite_errorcode", 0) & 0xFF
                if code != sqlite3.SQLITE_BUSY or time.monotonic() > give_up:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, SQLITE_WRITE_RETRY_S[1])
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


# Keys of a pooled SQLite connection's info: its descriptor of the writers' lock file, whether
# it holds that lock now, and when its write transaction's wait for locks gives up.
_WRITERS_LOCK, _WRITERS_LOCK_HELD = "registry_writers_lock", "registry_writers_lock_held"
_WRITE_DEADLINE, _WAITER = "registry_write_deadline", "registry_writers_lock_waiter"


class _LockWaiter:
    """A thread that waits on the writers' flock for one pooled connection, so that its writer
    can stop waiting at a deadline (flock has no timeout). Made at the connection's first
    contended wait and kept (a new thread for each wait cost 10 % of the lock's rate in a
    micro-benchmark of 4 processes x 4 threads, one kept per connection 3 %). A
    writer that gives up leaves the descriptor here: the thread unlocks and closes it if it
    ever gets the lock, then ends (the mutex orders the two)."""

    def __init__(self) -> None:
        self._asked, self._granted, self._mutex = threading.Lock(), threading.Lock(), \
            threading.Lock()
        self._asked.acquire()
        self._granted.acquire()
        self._descriptor = -1
        self._abandoned = False
        self._error: OSError | None = None
        threading.Thread(target=self._run, name="registry-writers-lock", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._asked.acquire()
            if self._descriptor < 0:  # stop(): the connection is closed
                return
            try:
                fcntl.flock(self._descriptor, fcntl.LOCK_EX)
            except OSError as error:
                self._error = error
            with self._mutex:
                if self._abandoned:
                    os.close(self._descriptor)  # also unlocks: nobody else holds it
                    return
                self._granted.release()

    def wait(self, descriptor: int, seconds: float) -> bool:
        """Whether the lock of `descriptor` is held within `seconds`; if not, the descriptor
        and this thread are abandoned (use neither again)."""
        self._descriptor, self._error = descriptor, None
        self._asked.release()
        if not self._granted.acquire(timeout=max(seconds, 0)):
            with self._mutex:
                if not self._granted.acquire(blocking=False):
                    self._abandoned = True
                    return False
        if self._error is not None:
            raise self._error
        return True

    def stop(self) -> None:
        """End the thread (it waits for nothing now)."""
        self._descriptor = -1
        self._asked.release()


def _database_is_locked() -> OperationalError:
    """The error SQLite gives a writer whose busy timeout ran out (503 + Retry-After)."""
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode, busy.sqlite_errorname = sqlite3.SQLITE_BUSY, "SQLITE_BUSY"
    return OperationalError("BEGIN IMMEDIATE", None, busy)


def _queue_writers(engine: Engine) -> None:
    """REGISTRY_SQLITE_WRITER_QUEUE=on (the default): a write transaction first takes a lock on
    a file beside the database (`<database>-writers`, flock, one descriptor per pooled
    connection, so it also excludes threads of one process) and holds it until its connection
    returns to the pool. Writers then wait blocked in the kernel, without the GIL, and start
    the moment the lock is free, instead of asking for SQLite's write lock every 1 to 4 ms
    (quality.md, B3). The wait for it and for SQLite's write lock together give up after the
    busy timeout with SQLite's own error: a free lock is taken at once, a held one is waited
    for in a thread of the connection (_LockWaiter), and a writer that gives up leaves its
    descriptor to that thread and opens another next time. The kernel releases the lock of a
    process that dies. Off: writers only ask for SQLite's write lock (_begin_immediate)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return

    @event.listens_for(engine, "begin")
    def _take(connection: Any) -> None:
        if connection.get_execution_options().get(SQLITE_DEFERRED, False):
            return
        info = connection.connection.info
        if info.get(_WRITERS_LOCK_HELD):
            return
        info[_WRITE_DEADLINE] = deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        if _WRITERS_LOCK not in info:
            info[_WRITERS_LOCK] = os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(info[_WRITERS_LOCK], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if _WAITER not in info:
                info[_WAITER] = _LockWaiter()
            if not info[_WAITER].wait(info[_WRITERS_LOCK], deadline - time.monotonic()):
                del info[_WRITERS_LOCK], info[_WAITER], info[_WRITE_DEADLINE]
                raise _database_is_locked() from None
        info[_WRITERS_LOCK_HELD] = True

    @event.listens_for(engine, "checkin")
    def _release(_dbapi_connection: Any, record: Any) -> None:
        record.info.pop(_WRITE_DEADLINE, None)
        if record.info.pop(_WRITERS_LOCK_HELD, False):
            fcntl.flock(record.info[_WRITERS_LOCK], fcntl.LOCK_UN)

    @event.listens_for(engine, "close")
    def _close(_dbapi_connection: Any, record: Any) -> None:
        record.info.pop(_WRITERS_LOCK_HELD, None)
        if _WAITER in record.info:
            record.info.pop(_WAITER).stop()
        if _WRITERS_LOCK in record.info:
            os.close(record.info.pop(_WRITERS_LOCK))


def prepare_sqlite(engine: Engine, *, writer_queue: bool) -> None:
    """Make SQLite transactional in the way the registry relies on (writer_queue: see
    _queue_writers).

    pysqlite's own transaction handling does not emit BEGIN for reads and breaks SAVEPOINT, so it
    is switched off and every transaction starts with BEGIN IMMEDIATE: writers queue instead of
    failing half-way, and the test suite's savepoint recipe works (see _begin_immediate for how
    they queue). Reads (unit_of_work(read_only=True)) and one-statement work (the token check of
    every request) begin deferred instead: a read then never waits for the write lock, and a
    lone write takes it when it runs.
    """
    if writer_queue:  # first: listeners run in order, the lock before BEGIN IMMEDIATE
        _queue_writers(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(SQLITE_DEFERRED, False):
            connection.exec_driver_sql("BEGIN")
        else:
            _begin_immediate(connection)
