"""Benchmarks B3 and B6 of quality.md, against gunicorn with the shipped config on loopback.

B3: single PUT /records/{id} under 16 concurrent clients for 30 s, against GET /healthz under the
    same load: throughput >= 0.3 of healthz, p99 <= 100 ms.
B6: the worker's memory before and after one 1,000-record batch: growth <= 50 MB; a body over the
    limit answers 413 before it is read.

    python -m benchmarks.load [--database postgresql|sqlite|both] [--seconds 30] [--clients 16]

PostgreSQL: a fresh database on the server of REGISTRY_BENCH_POSTGRES_URL (default the local
server), dropped afterwards; SQLite: a file in a temporary folder. Rate limiting is switched off
for the run (the load comes from one token). Prints a table; exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import fresh_database

ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
MB = 1024 * 1024
SUBJECTS_PER_CLIENT = 50

# --- set-up ------------------------------------------------------------------------------------

def prepare_database(url: str) -> str:
    """Migrate the benchmark's empty database; returns a submitter token."""
    from alembic import command

    from registry import create_app
    from registry.db import get_database
    from registry.services.health import alembic_config
    from registry.services.tokens import add_site, issue_token

    command.upgrade(alembic_config(url), "head")
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        add_site("TOR", "Toronto")
        token = issue_token("submitter", "TOR")[1]
        get_database().engine.dispose()
    return token


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn(url: str, **settings: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """gunicorn with the shipped config on a free loopback port; yields (host:port, process)."""
    bind = f"127.0.0.1:{_free_port()}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("REGISTRY_", "PROMETHEUS_"))}
    env.update({"DATABASE_URL": url, "REGISTRY_BIND": bind, "REGISTRY_RATE_LIMIT": "off",
                "REGISTRY_LOG_LEVEL": "WARNING", **settings})
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG),
         "registry:create_app()"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{bind}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.2)
        yield bind, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()


# --- B3: throughput and latency under load -----------------------------------------------------

def run_load(bind: str, seconds: float, clients: int,
             make_request: Any) -> tuple[int, list[float], int]:
    """`clients` threads on keep-alive connections for `seconds`: (answers, latencies in s,
    failures). make_request(client_number, n) -> (method, path, body, headers)."""
    host, port = bind.split(":")
    stop_at = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients

    def client(number: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        n = 0
        while time.monotonic() < stop_at:
            method, path, body, headers = make_request(number, n)
            started = time.perf_counter()
            try:
                connection.request(method, path, body=body, headers=headers)
                answer = connection.getresponse()
                answer.read()
                ok = answer.status < 300
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                ok = False
            latencies[number].append(time.perf_counter() - started)
            failures[number] += 0 if ok else 1
            n += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [latency for per_client in latencies for latency in per_client]
    return len(flat), flat, sum(failures)


def percentile(values: list[float], share: float) -> float:
    """The share-th quantile (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def benchmark_b3(url: str, token: str, seconds: float, clients: int) -> list[tuple]:
    """B3 rows: healthz and PUT throughput, p50/p99, and the bars."""
    from registry.services.synthetic import synthetic_record

    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rng = random.Random(2016)
    # Two versions of each client's subjects, sent in turn: every PUT changes the record.
    bodies = [[json.dumps({key: value for key, value in synthetic_record(rng, "TOR").items()
                           if key != "subject_id"}).encode() for _ in range(2)]
              for _ in range(clients * SUBJECTS_PER_CLIENT)]

    def healthz(_client: int, _n: int) -> tuple:
        return "GET", "/healthz", None, {}

    def put(client: int, n: int) -> tuple:
        subject = client * SUBJECTS_PER_CLIENT + n % SUBJECTS_PER_CLIENT
        body = bodies[subject][(n // SUBJECTS_PER_CLIENT) % 2]
        return "PUT", f"/api/v1/records/TOR-load-{subject:05d}", body, auth

    with gunicorn(url) as (bind, _):
        run_load(bind, 2, clients, healthz)  # warm-up
        done, latencies, failed = run_load(bind, seconds, clients, healthz)
        health = (done / seconds, latencies, failed)
        run_load(bind, 2, clients, put)  # warm-up, creates the subjects
        done, latencies, failed = run_load(bind, seconds, clients, put)
        puts = (done / seconds, latencies, failed)
    ratio = puts[0] / health[0]
    p99 = percentile(puts[1], 0.99) * 1000
    return [
        ("B3 GET /healthz", f"{health[0]:.0f}/s", f"p50 {percentile(health[1], .5)*1000:.1f} ms, "
         f"p99 {percentile(health[1], .99)*1000:.1f} ms, {health[2]} failed", "baseline", True),
        ("B3 PUT /records/{id}", f"{puts[0]:.0f}/s", f"p50 {percentile(puts[1], .5)*1000:.1f} ms, "
         f"p99 {p99:.1f} ms, {puts[2]} failed", "", puts[2] == 0),
        ("B3 throughput PUT/healthz", f"{ratio:.2f}", "", ">= 0.30", ratio >= 0.3),
        ("B3 p99 PUT", f"{p99:.1f} ms", "", "<= 100 ms", p99 <= 100),
    ]


# --- B6: memory of a worker --------------------------------------------------------------------

def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _workers_of(master: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                children.append(int(entry.name))
    return children


def _post(bind: str, path: str, body: bytes, token: str) -> tuple[int, float]:
    host, port = bind.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    started = time.perf_counter()
    connection.request("POST", path, body=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    answer = connection.getresponse()
    answer.read()
    connection.close()
    return answer.status, time.perf_counter() - started


def _declared_too_large(bind: str, token: str, declared: int) -> tuple[str, float]:
    """Declare a huge body, send one byte, and time the answer: only a server that does not
    wait for the body can answer at once."""
    host, port = bind.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        started = time.perf_counter()
        connection.sendall((
            "POST /api/v1/records/batch HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n{{").encode())
        answer = connection.recv(4096).decode("latin-1")
        return answer.split("\r\n", 1)[0], time.perf_counter() - started


def benchmark_b6(url: str, token: str) -> list[tuple]:
    """B6 rows: worker memory growth over one 1,000-record batch, and the 413 before parsing."""
    from registry.services.synthetic import synthetic_record

    rng = random.Random(6)
    batch = json.dumps({"records": [synthetic_record(rng, "TOR") for _ in range(1000)]}).encode()
    warm = json.dumps({"records": [synthetic_record(rng, "TOR") for _ in range(50)]}).encode()
    with gunicorn(url, REGISTRY_WORKERS="1") as (bind, process):
        (worker,) = _workers_of(process.pid)
        _post(bind, "/api/v1/records/batch", warm, token)  # imports and caches loaded
        before = _rss_bytes(worker)
        status, took = _post(bind, "/api/v1/records/batch", batch, token)
        after = _rss_bytes(worker)
        line, answered_in = _declared_too_large(bind, token, 50 * MB)
        after_413 = _rss_bytes(worker)
    growth = (after - before) / MB
    return [
        ("B6 worker RSS before batch", f"{before / MB:.1f} MB", "baseline", "", True),
        ("B6 one 1,000-record batch", f"{len(batch) / MB:.2f} MB body", f"HTTP {status} in "
         f"{took * 1000:.0f} ms", "", status == 200),
        ("B6 worker RSS growth", f"{growth:.1f} MB", f"after {after / MB:.1f} MB", "<= 50 MB",
         growth <= 50),
        ("B6 50 MB body declared", line, f"in {answered_in * 1000:.1f} ms, RSS "
         f"{(after_413 - after) / MB:+.1f} MB", "413 unread", line.endswith("413 REQUEST ENTITY "
                                                                             "TOO LARGE")
         or " 413 " in f"{line} "),
    ]


def print_table(rows: list[tuple]) -> None:
    """The figures as a table."""
    header = ("what", "figure", "detail", "bar", "met")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    print("  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(header[:4])) + "  met")
    for row in rows:
        print("  ".join(f"{str(cell):<{widths[i]}}" for i, cell in enumerate(row[:4]))
              + ("  yes" if row[4] else "  NO"))


def main(argv: list[str] | None = None) -> int:
    """Run B3 and B6; print the table; 1 if a bar is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=16)
    options = parser.parse_args(argv)
    kinds = ["postgresql", "sqlite"] if options.database == "both" else [options.database]
    met = True
    for kind in kinds:
        print(f"\n{kind}: {options.clients} clients, {options.seconds:.0f} s per phase, gunicorn "
              f"with deploy/{GUNICORN_CONFIG.name}, load average {os.getloadavg()[0]:.1f} before")
        with fresh_database(kind) as url:
            token = prepare_database(url)
            rows = benchmark_b3(url, token, options.seconds, options.clients)
            rows += benchmark_b6(url, token)
        print_table(rows)
        met = met and all(row[4] for row in rows)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
