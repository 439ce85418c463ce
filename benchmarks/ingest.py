"""B1 and B2 of quality.md: batch ingest, and re-sending unchanged records.

B1: 10 batches of 1,000 valid records through POST /records/batch (test client: full validation,
derivation, versions, audit) against the same rows inserted with SQLAlchemy Core insert()
executemany into an equivalent bare table. Bar: ratio <= 6 and >= 2,000 records/s.
B2: the same 10,000 records sent again (all unchanged) against B1's time. Bar: <= 0.5.
"""

from __future__ import annotations

import random
import sys

from alembic import command
from sqlalchemy import Column, MetaData, Table, insert

from benchmarks.common import Figure, fresh_database, print_table, timed
from registry import create_app
from registry.db import get_database
from registry.models import Record
from registry.services.health import alembic_config
from registry.core.record import canonical
from registry.services.intake.record_rows import row_values
from registry.services.intake.synthetic import synthetic_record
from registry.services.access.tokens import add_site, issue_token

BATCHES, BATCH_SIZE = 10, 1000


def bare_copy_of_records(metadata: MetaData) -> Table:
    """A table with the columns and types of `records`, without keys, indexes or checks."""
    return Table("bench_bare_records", metadata, *[
        Column(column.name, column.type.copy() if hasattr(column.type, "copy") else column.type)
        for column in Record.__table__.columns if column.name != "id"])


def measure(kind: str) -> list[Figure]:
    """Run B1 and B2 on a fresh database of `kind`."""
    rng = random.Random(1)
    records = [synthetic_record(rng, "BEN") for _ in range(BATCHES * BATCH_SIZE)]
    batches = [records[i:i + BATCH_SIZE] for i in range(0, len(records), BATCH_SIZE)]
    with fresh_database(kind) as url:
        command.upgrade(alembic_config(url), "head")
        app = create_app({"DATABASE_URL": url, "REGISTRY_MAX_BODY_BYTES": 64 * 1024 * 1024})
        with app.app_context():
            site_id = add_site("BEN", "benchmark site").id
            _, secret = issue_token("submitter", "BEN")
            engine = get_database().engine
            bare = bare_copy_of_records(MetaData())
            bare.create(engine)
            rows = [[{**row_values(canonical(r)), "site_id": site_id,
                      "subject_id": r["subject_id"], "version": 1, "cell_key": 0}
                     for r in batch] for batch in batches]

            def core_insert() -> None:
                for chunk in rows:
                    with engine.begin() as connection:
                        connection.execute(insert(bare), chunk)

            baseline = timed(core_insert)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {secret}"}

        def send_all(expected: str) -> None:
            for batch in batches:
                response = client.post("/api/v1/records/batch", json={"records": batch},
                                       headers=headers)
                summary = response.get_json()["summary"]
                assert summary[expected] == len(batch), summary

        b1 = timed(lambda: send_all("created"))
        b2 = timed(lambda: send_all("unchanged"))
        with app.app_context():
            get_database().engine.dispose()
    rate = len(records) / b1
    return [
        Figure("B1", kind, b1, baseline, "<= 6, >= 2000/s", b1 / baseline <= 6 and rate >= 2000,
               f"{rate:,.0f} records/s; API {b1:.2f} s, Core executemany {baseline:.2f} s"),
        Figure("B2", kind, b2, b1, "<= 0.5 of B1", b2 / b1 <= 0.5,
               f"{len(records) / b2:,.0f} records/s; resend {b2:.2f} s"),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run B1 and B2 on SQLite and PostgreSQL; exit 1 if a bar is missed."""
    kinds = (sys.argv[1:] if argv is None else argv) or ["sqlite", "postgresql"]
    figures = [figure for kind in kinds for figure in measure(kind)]
    print_table(figures)
    return 0 if all(figure.passed for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
