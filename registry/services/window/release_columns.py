"""The columnar copy of a release (models/release.py `release_columns`): what the analyses read.

After a release is cut (prepare()), every column the survival analyses and Cox models read is
written once, for every record state the release holds, in record order, as the bytes of a
numpy array:

- `record_key`, `site_id` and the day columns (DAYS) as 32-bit integers, NULL as NULL_DAY;
- every catalogue dimension (services/window/catalogue.py, the site apart) coded as an 8-bit
  integer: code i stands for the i-th value of the column's `domain` (the stored values, in the
  order of the dimension's categories, then any other value found), -1 for NULL.

A question reads the columns it needs in one statement and keeps them in the process (COLUMNS,
bounded by bytes); the cohort rules, filters and groupings are then numpy over those arrays
(services/analysis/analyses.py). Withdrawal of consent deletes the copies of every release that
held the record, in the withdrawal's transaction (erase(), privacy.md 2.1); the next question on
such a release writes its copy again from release_records (build(), the same as at the cut)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.db import unit_of_work
from registry.models import Release, in_release, release_columns, release_records
from registry.services.window.catalogue import SITE, dimensions
from registry.services.window.release_memo import ReleaseMemo

_RELEASED = release_records.c
# The record's columns the analyses' rules read, by the released records' own names.
REMISSION_START = _RELEASED.remission_start_day.name
PROGRESSION = _RELEASED.progression_day.name
LAST_FOLLOWUP = _RELEASED.last_followup_day.name
STOP = _RELEASED.trastuzumab_stop_day.name
RESUME = _RELEASED.trastuzumab_resume_day.name
MAINTENANCE = _RELEASED.maintenance_status.name
VITAL = _RELEASED.vital_status.name
DAYS = (REMISSION_START, PROGRESSION, LAST_FOLLOWUP, STOP, RESUME)
NUMBERS = ("record_key", "site_id", *DAYS)
NULL_DAY = int(np.iinfo(np.int32).min)
NULL_CODE = -1
# The columns read by questions, kept per process, bounded by the bytes of their arrays
# (release_memo.MAX_SIZE): a release of 1,000,000 records takes some 30 MB for the columns of
# a survival answer.
COLUMNS = ReleaseMemo()


@dataclass(frozen=True)
class Column:
    """One column of a release: its array (record order; never changed by a reader) and, for a
    coded column, the stored value each code stands for (code -1: NULL)."""

    values: np.ndarray
    domain: tuple[Any, ...] | None = None

    def codes_of(self, labels: tuple[str, ...], label: Any) -> np.ndarray:
        """Per record, the index in `labels` of its value's label (`label(value)`, None for
        NULL); a label not in `labels` gets len(labels)."""
        assert self.domain is not None
        index = {name: number for number, name in enumerate(labels)}
        table = [index.get(label(value), len(labels)) for value in self.domain]
        table.append(index.get(label(None), len(labels)))  # code -1: the last entry
        return np.asarray(table, dtype=np.int64)[self.values]

    def equals(self, value: Any) -> np.ndarray:
        """Per record: is the stored value `value` (never for NULL)."""
        assert self.domain is not None
        if value not in self.domain:
            return np.zeros(len(self.values), dtype=bool)
        return self.values == self.domain.index(value)


def coded_names() -> tuple[str, ...]:
    """The catalogue dimensions the copy codes (every one but the site)."""
    return tuple(name for name in dimensions() if name != SITE)


def _encode(name: str, values: tuple[Any, ...]) -> Column:
    """A column of stored values as an array (NUMBERS) or codes with their domain."""
    if name in NUMBERS:
        return Column(np.array([NULL_DAY if v is None else v for v in values], dtype=np.int32))
    raw = np.array(values, dtype=object)
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    found = [_plain(value) for value in uniques]
    # The domain in the dimension's order, so that codes read alike across releases.
    order = {category: number for number, category in
             enumerate(dimensions()[name].categories)}
    ranked = sorted(range(len(found)), key=lambda i: (order.get(_category(found[i]), 1 << 30),
                                                      str(found[i])))
    renumber = np.empty(len(found) + 1, dtype=np.int8)
    renumber[-1] = NULL_CODE
    for code, old in enumerate(ranked):
        renumber[old] = code
    return Column(renumber[codes], tuple(found[i] for i in ranked))


def _plain(value: Any) -> Any:
    """A stored value as JSON keeps it (numpy's booleans as bool)."""
    return bool(value) if isinstance(value, (bool, np.bool_)) else value


def _category(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def build(session: Session, release_id: int) -> dict[str, Column]:
    """Every column of the copy of a release, from release_records (one SELECT through the
    driver, in record order)."""
    names = (*NUMBERS, *coded_names())
    statement = select(*(release_records.c[name] for name in names)).where(
        in_release(release_id)).order_by(release_records.c.record_id)
    rows = driver_rows(session, statement)
    values = list(zip(*rows)) if rows else [()] * len(names)
    return {name: _encode(name, column) for name, column in zip(names, values)}


def store(session: Session, release_id: int, columns: dict[str, Column]) -> None:
    """Write the copy of a release (its rows must not exist yet)."""
    session.execute(insert(release_columns), [
        {"release_id": release_id, "name": name, "data": column.values.tobytes(),
         "domain": None if column.domain is None else json.dumps(list(column.domain))}
        for name, column in columns.items()])


def prepare(release_id: int) -> None:
    """Write the copy of a release just cut, after its commit: built in a transaction that
    reads (no writer waits for it), written in one that checks the release has lost no record
    since (a withdrawal in between lowers its count; its copy is then left to the next
    question, which builds it without the record)."""
    with unit_of_work(read_only=True) as session:
        with _no_statement_timeout(session):
            columns = build(session, release_id)
    with unit_of_work() as session:
        release = session.get(Release, release_id, with_for_update={"read": True})
        held = release.record_count if release is not None else None
        if any(len(column.values) != held for column in columns.values()):
            return
        stored = session.scalar(select(func.count()).select_from(release_columns).where(
            release_columns.c.release_id == release_id))
        if not stored:
            store(session, release_id, columns)


def erase(session: Session, release_ids: list[int]) -> None:
    """Delete the copies of these releases (a withdrawn record was in them)."""
    if release_ids:
        session.execute(delete(release_columns).where(
            release_columns.c.release_id.in_(release_ids)))


def read(session: Session, release: Release, names: tuple[str, ...]) -> dict[str, Column]:
    """The columns `names` of a release: kept in the process, else read in one statement, else
    (no copy: a withdrawal deleted it, or the release was cut before copies existed) built from
    release_records and written for the next question."""
    found: dict[str, Column] = {}
    missing = []
    for name in names:
        kept = COLUMNS.peek(session, release, name)
        if kept is None:
            missing.append(name)
        else:
            found[name] = kept
    if missing:
        read_now = _stored(session, release, missing)
        if len(read_now) < len(missing):
            read_now = {name: column for name, column in _rebuild(session, release).items()
                        if name in missing}
        for name, column in read_now.items():
            column.values.flags.writeable = False
            COLUMNS.keep(session, release, name, column, column.values.nbytes)
        found.update(read_now)
    return found


def _stored(session: Session, release: Release, names: list[str]) -> dict[str, Column]:
    """The stored columns among `names` that hold the release's record count."""
    table = release_columns
    statement = select(table.c.name, table.c.domain, table.c.data).where(
        table.c.release_id == release.id, table.c.name.in_(names))
    columns = {}
    for name, domain, data in driver_rows(session, statement, binary=True):
        if domain is None:
            column = Column(np.frombuffer(data, dtype=np.int32))
        else:
            column = Column(np.frombuffer(data, dtype=np.int8), tuple(json.loads(domain)))
        if len(column.values) == release.record_count:
            columns[name] = column
    return columns


def _rebuild(session: Session, release: Release) -> dict[str, Column]:
    """Build a release's copy and write it in a savepoint: a question asked at the same time may
    have written it first (its insert then fails and this one's is rolled back, the answer
    uses what it built). On PostgreSQL the release's row is locked for share first, so that a
    withdrawal (which lowers its count) either came before and is seen, or waits for this
    transaction and then deletes what it wrote."""
    if session.get_bind().dialect.name == "postgresql":
        session.refresh(release, with_for_update={"read": True})
    with _no_statement_timeout(session):
        columns = build(session, release.id)
    try:
        with session.begin_nested():
            session.execute(delete(release_columns).where(
                release_columns.c.release_id == release.id))
            store(session, release.id, columns)
    except IntegrityError:
        pass
    return columns


@contextmanager
def _no_statement_timeout(session: Session) -> Iterator[None]:
    """On PostgreSQL, lift the per-request statement timeout for building a copy (a scan of the
    whole release, 16 s at 1,000,000 records on a loaded machine, like the cut itself), then
    give the rest of the transaction its timeout back."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        session.execute(text("SET LOCAL statement_timeout = 0"))
    yield
    if postgresql:
        session.execute(text("SET LOCAL statement_timeout TO DEFAULT"))


def driver_rows(session: Session, statement: Any, binary: bool = False
                ) -> list[tuple[Any, ...]]:
    """The rows of a statement as the driver returns them (plain tuples): SQLAlchemy's row
    objects and type processing would take longer than reading them. `binary`: PostgreSQL
    sends the values in binary (bytes three times faster than in hex text)."""
    connection = session.connection()
    compiled = statement.compile(dialect=connection.dialect,
                                  compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup or ())
    raw = connection.connection.dbapi_connection
    postgresql = connection.dialect.name == "postgresql"
    cursor = raw.cursor(binary=True) if binary and postgresql else raw.cursor()
    try:
        cursor.execute(str(compiled), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()
