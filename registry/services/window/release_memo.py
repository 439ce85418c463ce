"""What was computed from a release, kept for the next question on it (privacy.md 2.1: a
release never changes, so neither does anything computed from its records).

The memo needs no invalidation: its key holds the release as it stands, so a release that
changes is a different key. The only change a release admits is a withdrawal of consent
(services/window/releases.py erase_from_releases), which lowers its record count; the database (its
URL) and the cut time tell apart releases of the same number in two databases, or cut again
after a rolled-back one. It is bounded by the size of what it holds (oldest use evicted first)
and lives in the process: each worker keeps its own. It saves work only: every question is
still checked against the budget, answered under disclosure control and logged as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from sqlalchemy.orm import Session

from registry.models import Release

# Bound on the memo's total size, in the callers' own measure (bytes, for the columns of
# services/window/release_columns.py).
MAX_SIZE = 256 * 2**20


class ReleaseMemo:
    """Values computed from a release, by the release as it stands and a key of the caller's."""

    def __init__(self, max_size: int = MAX_SIZE) -> None:
        self.max_size = max_size
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def peek(self, session: Session, release: Release, key: Hashable) -> Any:
        """The value kept for `key` on `release`, or None."""
        identity = _release_identity(session, release)
        full_key = (identity, key)
        with self._lock:
            kept = self._values.get(full_key)
            if kept is not None:
                self._values.move_to_end(full_key)
                return kept[0]
            self._forget_older_states(identity)
        return None

    def keep(self, session: Session, release: Release, key: Hashable, value: Any,
             weight: int) -> None:
        """Keep `value` for `key` on `release` when its `weight` fits the bound, the oldest
        uses evicted to make room."""
        if weight > self.max_size:
            return
        full_key = (_release_identity(session, release), key)
        with self._lock:
            if full_key not in self._values:
                self._values[full_key] = (value, weight)
                self._size += weight
            while self._size > self.max_size:
                _, (_, evicted) = self._values.popitem(last=False)
                self._size -= evicted

    def _forget_older_states(self, identity: tuple[Any, ...]) -> None:
        """Drop what was kept of the same release before it changed (a withdrawal): never used
        again (its key differs), and a withdrawn patient's share of it need not stay in memory
        until evicted. Called with the lock held."""
        stale = [full_key for full_key in self._values
                 if full_key[0][:2] == identity[:2] and full_key[0] != identity]
        for full_key in stale:
            self._size -= self._values.pop(full_key)[1]

    def clear(self) -> None:
        """Forget every value (benchmarks measure the first question on a cohort with it)."""
        with self._lock:
            self._values.clear()
            self._size = 0


def _release_identity(session: Session, release: Release) -> tuple[Any, ...]:
    """The release as it stands: its database, number, cut time and what a withdrawal lowers."""
    url = session.get_bind().engine.url.render_as_string(hide_password=True)
    return (url, release.id, release.cut_at, release.record_count, release.record_key_sum)
