"""A rate-limit storage that the workers of one server share: a SQLite file (`sqlite:///path`).

Counters in memory:// belong to one process, so gunicorn's workers would each grant a token the
whole limit (4 workers: 4 times it). Redis is the store for several instances; for the workers of
one server this file does the same without another service: each count is one atomic upsert in
a WAL database that every worker opens (the shipped gunicorn config puts it in /dev/shm, so it
never touches a disk). It is registered with the `limits` library under the scheme `sqlite`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from urllib.parse import unquote, urlparse

from limits.storage import Storage

_SCHEMA = ("CREATE TABLE IF NOT EXISTS counters ("
           " key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL)")
# One statement: a new window starts when the old one has ended, else the count grows.
_INCREMENT = (
    "INSERT INTO counters (key, count, expires_at) VALUES (:key, :amount, :now + :expiry)"
    " ON CONFLICT (key) DO UPDATE SET"
    " count = CASE WHEN expires_at <= :now THEN :amount ELSE count + :amount END,"
    " expires_at = CASE WHEN expires_at <= :now THEN :now + :expiry ELSE expires_at END"
    " RETURNING count")
_SWEEP_EVERY = 1000  # increments of one process between removals of ended windows


class SQLiteStorage(Storage):
    """Fixed-window counters in a SQLite file shared by the processes of one host."""

    STORAGE_SCHEME = ["sqlite"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: object) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.path = unquote(urlparse(uri).path)
        self.local = threading.local()
        self.increments = 0
        self._connection().execute(_SCHEMA)

    @property
    def base_exceptions(self) -> type[Exception]:
        """What a failure of this storage raises."""
        return sqlite3.Error

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (a process opens its own after the fork)."""
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=5, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")  # counters need no durability
            self.local.connection = connection
        return connection

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to the key's count in its window (a new window if none is open)."""
        self.increments += 1
        connection = self._connection()
        if self.increments % _SWEEP_EVERY == 0:
            connection.execute("DELETE FROM counters WHERE expires_at <= ?", (time.time(),))
        row = connection.execute(_INCREMENT, {"key": key, "amount": amount, "now": time.time(),
                                              "expiry": expiry}).fetchone()
        return int(row[0])

    def get(self, key: str) -> int:
        """The key's count in its open window (0 if none)."""
        row = self._connection().execute(
            "SELECT count FROM counters WHERE key = ? AND expires_at > ?",
            (key, time.time())).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends (Unix time; now if no window is open)."""
        row = self._connection().execute(
            "SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?",
            (key, time.time())).fetchone()
        return float(row[0]) if row else time.time()

    def check(self) -> bool:
        """Whether the file can be read."""
        try:
            self._connection().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def reset(self) -> int | None:
        """Forget every counter."""
        return self._connection().execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        """Forget one counter."""
        self._connection().execute("DELETE FROM counters WHERE key = ?", (key,))
