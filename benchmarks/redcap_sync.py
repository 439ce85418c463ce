"""B5 (quality.md): REDCap sync of 10,000 records vs batch ingest of the same records (B1).

Baseline (B1, measured here so this benchmark stands alone): the same 10,000 de-identified
records in 10 batches of 1,000 through POST /api/v1/records/batch with the Flask test client.
B5: registry-redcap-sync reading them from the fake REDCap on loopback (batches of 100 record
ids, as at a site, without the courtesy pause between batches, which is idle time not work)
into a registry served on loopback, end to end: export, assembly, de-identification, local
validation, HTTP push, registry validation and writes. Bar: B5 / B1 <= 3.

    python -m benchmarks.redcap_sync            # SQLite (a temporary file)
    REGISTRY_BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/<db> \\
        python -m benchmarks.redcap_sync        # PostgreSQL (a schema of its own, dropped)
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import benchmarks.common  # noqa: F401  (quiet request logs)
from registry.core.deidentify import build_record, subject_id
from registry.site.redcap.config import load_config
from registry.site.redcap.sync import run
from tests.fake_redcap import FakeRedcap, ServerThread
from tests.redcap_support import (
    environment_of, load_project, new_site, registry_server, source_records,
)

RECORDS = 10_000
BASELINE_BATCH = 1_000
BAR = 3.0
ROUNDS = int(os.environ.get("B5_ROUNDS", "2"))


def _baseline(app, token: str, records: list[dict]) -> float:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    for start in range(0, len(records), BASELINE_BATCH):
        response = client.post("/api/v1/records/batch", headers=headers,
                               json={"records": records[start:start + BASELINE_BATCH]})
        assert response.status_code == 200
        assert response.json["summary"]["created"] == BASELINE_BATCH, response.json["summary"]
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Measure B1 and B5 on the same records; print a table; 1 when the bar is missed.

    (No options: `argv` is accepted for `python -m benchmarks`.)"""
    database = os.environ.get("REGISTRY_BENCH_DATABASE_URL", "")
    if database:
        import tests.conftest as conftest

        conftest.TEST_DATABASE_URL = database  # registry_server makes a schema of its own
    with tempfile.TemporaryDirectory() as folder, registry_server(Path(folder)) as served:
        app, _capture, url = served
        fake = FakeRedcap()
        sources = source_records(RECORDS, seed=5)
        load_project(fake, sources)
        with ServerThread(fake) as redcap:
            environ = environment_of(Path(folder) / "state", redcap.url, url, "", fake.token)
            # B1's records: exactly what the sync will send, built the same way.
            secret = environ["REGISTRY_SITE_SECRET"]
            rows = fake.flat_rows([record_id for record_id, _, _ in sources])
            by_id: dict[str, list] = {}
            for row in rows:
                by_id.setdefault(row["record_id"], []).append(row)
            baseline_records = [build_record(by_id[record_id], subject_id(secret, record_id))[0]
                                for record_id, _, _ in sources]
            del rows, by_id
            # Setup data lives on; keep the garbage collector from walking it in both runs.
            gc.collect()
            gc.freeze()
            # The machine is shared: alternate the two and keep the best of each.
            baseline = synced = float("inf")
            for round_ in range(ROUNDS):
                token = new_site(app, f"BBATCH{round_}")
                baseline = min(baseline, _baseline(app, token, baseline_records))
                config = load_config(
                    None, environ={**environ, "REGISTRY_TOKEN": new_site(app, f"BSYNC{round_}"),
                                   "REGISTRY_SYNC_STATE_DIR": f"{folder}/state{round_}"},
                    pause_seconds=0, batch_size=100, push_batch_size=BASELINE_BATCH,
                    timeout_seconds=120)
                started = time.perf_counter()
                report = run(config)
                synced = min(synced, time.perf_counter() - started)
                if report.failure or report.counts["created"] != RECORDS:
                    break
    if report.failure or report.counts["created"] != RECORDS:
        print(f"B5 sync did not complete: {report.as_dict()['counts']} {report.failure}")
        return 1
    ratio = synced / baseline
    backend = "PostgreSQL" if database else "SQLite"
    print(f"\nB5 REDCap sync vs batch ingest ({RECORDS:,} records, {backend}, best of "
          f"{ROUNDS} alternating rounds)")
    print(f"{'measure':<50}{'seconds':>9}{'records/s':>11}")
    print(f"{'B1 baseline: 10 x 1,000 via POST /batch':<50}{baseline:>9.2f}"
          f"{RECORDS / baseline:>11,.0f}")
    print(f"{'B5 registry-redcap-sync, fake REDCap (loopback)':<50}{synced:>9.2f}"
          f"{RECORDS / synced:>11,.0f}")
    verdict = "ok" if ratio <= BAR else "MISSED"
    print(f"{'ratio B5 / B1':<50}{ratio:>9.2f}   bar <= {BAR}  {verdict}")
    return 0 if ratio <= BAR else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
