"""Shared set-up of the benchmarks: a fresh database per run, a table printer, the bars."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import make_url

from registry.db import make_engine

# One JSON log line per request would drown the tables the benchmarks print.
os.environ.setdefault("REGISTRY_LOG_LEVEL", "WARNING")

# PostgreSQL server the benchmarks use; each run creates and drops a database of its own on it.
POSTGRES_SERVER_URL = os.environ.get(
    "REGISTRY_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """Yield the URL of an empty database of `kind` ('sqlite' or 'postgresql'), then drop it."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    name = f"registry_bench_{uuid.uuid4().hex[:8]}"
    server = make_engine(POSTGRES_SERVER_URL).execution_options(isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_SERVER_URL).set(database=name).render_as_string(
            hide_password=False)
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def timed(work: Callable[[], object]) -> float:
    """Seconds that `work` takes."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


@dataclass
class Figure:
    """One line of a benchmark's table."""

    name: str
    database: str
    value: float
    baseline: float
    bar: str
    passed: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        """The measured time (or rate) over its baseline."""
        return self.value / self.baseline if self.baseline else float("inf")


def print_table(figures: list[Figure]) -> None:
    """Print the figures as an aligned table."""
    width = max([len("benchmark"), *(len(figure.name) for figure in figures)])
    header = f"{'benchmark':<{width}} {'database':<11} {'ratio':>7} {'bar':<16} {'ok':<4} note"
    print(header)
    print("-" * len(header))
    for figure in figures:
        print(f"{figure.name:<{width}} {figure.database:<11} {figure.ratio:>7.2f} "
              f"{figure.bar:<16} {'yes' if figure.passed else 'NO':<4} {figure.note}")
