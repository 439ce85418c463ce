"""B4 of quality.md: GET /aggregates/counts (two dimensions, one filter) on a release, against
the raw SQL GROUP BY of the same counts on the live table of the same database, 100,000 records
on SQLite and PostgreSQL (bar: ratio <= 1.5) and 1,000,000 records on PostgreSQL (reported).
Each timed request is a question not asked before (the query log is emptied between them, not
timed); the same question asked again is timed too (bar: <= 5 ms, no scan). Also reported: what
cutting a release costs (the first one, and the next after 1% of the records changed).

Synthetic records are inserted directly (Core executemany), not through the API. Each database
is created for the run and dropped afterwards. `python -m benchmarks.aggregates [--quick]`.
"""

from __future__ import annotations

import random
import statistics
import string
import sys

from sqlalchemy import insert, text, update

from benchmarks.common import Figure, fresh_database, print_table, timed
from registry import create_app
from registry.db import get_database, make_engine, unit_of_work
from registry.models import QueryLogEntry, Record, Site
from registry.services.window.disclosure import Policy
from registry.services.window.releases import cut_release
from registry.services.health import alembic_config
from registry.services.intake.synthetic import synthetic_rows
from registry.services.access.tokens import issue_token

BAR = 1.5
QUERY = "/api/v1/aggregates/counts?rows=hr_status&columns=maintenance_status&presentation=de_novo"
RAW = ("SELECT hr_status, maintenance_status, count(*) FROM records "
       "WHERE presentation = 'de_novo' GROUP BY hr_status, maintenance_status")
SITES = ("TOR", "MTL", "VAN", "HAL", "OTT", "CAL")
# Distinct synthetic records generated; larger loads repeat them under new subjects and keys.
POOL = 20_000
CHUNK = 10_000
# Records inserted by executemany; beyond this, copies in SQL.
BASE = 100_000
REPEATS = 21
AGAIN_BAR_MS = 5.0


def _letters(number: int) -> str:
    """A subject pseudonym in letters only (no digit runs), unique per number."""
    word = ""
    while True:
        number, rest = divmod(number, 26)
        word += string.ascii_lowercase[rest]
        if not number:
            return word.ljust(8, "a")


def load(url: str, count: int) -> None:
    """Migrate the database and insert `count` synthetic records over the sites: up to BASE by
    Core executemany, the rest by copying those rows in SQL under new subjects and keys."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    rng = random.Random(4)
    with engine.begin() as connection:
        site_ids = {connection.execute(insert(Site).values(code=code, name=f"{code} centre")
                                       .returning(Site.id)).scalar_one(): code
                    for code in SITES}
    base = min(count, BASE)
    pool = synthetic_rows(rng, site_ids, min(POOL, base))
    for start in range(0, base, CHUNK):
        rows = []
        for number in range(start, min(base, start + CHUNK)):
            row = dict(pool[number % len(pool)])
            row["subject_id"] = f"{site_ids[row['site_id']]}-{_letters(number)}"
            row["cell_key"] = rng.randrange(256)
            rows.append(row)
        with engine.begin() as connection:
            connection.execute(insert(Record), rows)
    columns = [c.name for c in Record.__table__.columns if c.name not in ("id", "subject_id",
                                                                          "cell_key")]
    names = ", ".join(columns)
    key = ("CAST(floor(random() * 256) AS INTEGER)" if engine.dialect.name == "postgresql"
           else "abs(random()) % 256")
    for copy in range(1, -(-count // base)):
        rows_left = min(base, count - copy * base)
        with engine.begin() as connection:
            connection.execute(text(
                f"INSERT INTO records ({names}, subject_id, cell_key) "
                f"SELECT {names}, subject_id || '-{_letters(copy)}', {key} FROM records "
                f"WHERE id <= {rows_left}"))
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE records"))
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()
        loaded = connection.execute(text("SELECT count(*) FROM records")).scalar_one()
    assert loaded == count, (loaded, count)
    engine.dispose()


def _storage(engine) -> str:  # noqa: ANN001
    """Bytes of the live records and of the release storage (PostgreSQL; SQLite: the file)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            records, released = connection.execute(text(
                "SELECT pg_total_relation_size('records'), "
                "pg_total_relation_size('release_records')")).one()
            return f"records {records / 2**20:.0f} MB, release_records {released / 2**20:.0f} MB"
        pages = connection.execute(text("PRAGMA page_count")).scalar_one()
        size = connection.execute(text("PRAGMA page_size")).scalar_one()
        return f"database file {pages * size / 2**20:.0f} MB"


def cut_releases(app) -> list[str]:  # noqa: ANN001
    """Cut the first release, then one more after 1% of the records changed: their costs."""
    notes = []
    policy = Policy.from_config(app.config)
    with app.app_context():
        engine = get_database().engine
        before = _storage(engine)
        seconds = timed(lambda: cut_release(None, "benchmark", policy))
        notes.append(f"first release: {seconds:.1f} s ({before} -> {_storage(engine)})")
        with unit_of_work() as session:
            count = session.execute(text("SELECT count(*) FROM records")).scalar_one()
            session.execute(update(Record).where(Record.id % 100 == 0).values(
                version=Record.version + 1, last_followup_day=Record.last_followup_day + 30))
        seconds = timed(lambda: cut_release(None, "benchmark", policy))
        notes.append(f"next release after {count // 100:,} changes: {seconds * 1000:.0f} ms "
                     f"({_storage(engine)})")
    return notes


def measure(url: str) -> tuple[float, float, float, list[str]]:
    """Median seconds of the endpoint (new questions) and of the raw GROUP BY on the live
    table, on the app's own engine; median seconds of the same question asked again; notes on
    the cost of releases."""
    app = create_app({"DATABASE_URL": url, "REGISTRY_QUESTION_BUDGET": 10**9,
                      "REGISTRY_RELEASE_MIN_DAYS": 0, "REGISTRY_RATE_LIMIT": "off"})
    notes = cut_releases(app)
    with app.app_context():
        _, secret = issue_token("coordinator")
        engine = get_database().engine
    headers = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()

    def forget() -> None:
        with engine.begin() as connection:
            connection.execute(QueryLogEntry.__table__.delete())

    def endpoint() -> None:
        response = client.get(QUERY, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)

    def raw() -> None:
        with engine.connect() as connection:
            connection.execute(text(RAW)).all()

    for _ in range(3):  # warm caches and the connection pool
        forget()
        endpoint()
        raw()
    # Interleaved, so that load from other processes falls on both sides alike.
    pairs = []
    for _ in range(REPEATS):
        forget()
        pairs.append((timed(endpoint), timed(raw)))
    api_seconds = statistics.median(a for a, _ in pairs)
    raw_seconds = statistics.median(r for _, r in pairs)
    again_seconds = statistics.median(timed(endpoint) for _ in range(REPEATS))
    engine.dispose()
    return api_seconds, raw_seconds, again_seconds, notes


def main(argv: list[str] | None = None) -> int:
    """Run B4 and print its table; non-zero when a bar is missed (1,000,000 is reported)."""
    argv = sys.argv[1:] if argv is None else argv
    runs = [("sqlite", 100_000, True), ("postgresql", 100_000, True)]
    if "--quick" not in argv:
        runs.append(("postgresql", 1_000_000, False))
    figures = []
    notes: list[str] = []
    for kind, count, gated in runs:
        with fresh_database(kind) as url:
            load(url, count)
            api_seconds, raw_seconds, again_seconds, release_notes = measure(url)
        figures.append(Figure(
            "B4", kind, api_seconds, raw_seconds, f"<= {BAR}" if gated else "reported",
            api_seconds / raw_seconds <= BAR or not gated,
            f"{count:,} records: endpoint {api_seconds * 1000:.1f} ms, GROUP BY "
            f"{raw_seconds * 1000:.1f} ms"))
        figures.append(Figure(
            "B4 again", kind, again_seconds * 1000, AGAIN_BAR_MS, f"<= {AGAIN_BAR_MS:g} ms",
            again_seconds * 1000 <= AGAIN_BAR_MS,
            f"{count:,} records: the same question again {again_seconds * 1000:.2f} ms"))
        notes.extend(f"{kind} {count:,}: {note}" for note in release_notes)
    print(f"B4: {QUERY}")
    print_table(figures)
    for note in notes:
        print(note)
    return 0 if all(figure.passed for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
