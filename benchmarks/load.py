"""Benchmarks B3 and B6 of quality.md, against gunicorn with the shipped config on loopback.

B3: single PUT /records/{id} from 16 concurrent keep-alive connections of the load generator wrk
    for 30 s, against pgbench running the statements a PUT sends (benchmarks/put_statements.py:
    token lookup, row lock, the record + version + audit write, commit) with as many clients on
    the same database, phases interleaved pgbench-PUT-PUT-pgbench: throughput >= 0.3 of
    pgbench, p99 <= 100 ms (both databases; SQLite has no pgbench phase). GET /healthz is
    reported beside them for context. Also reported: the CPU each request costs in the gunicorn
    workers, in PostgreSQL (when the server is local) and in the load generator (from /proc),
    and how busy the machine was, which shows what limits the ratio.
B6: the worker's memory before and after one 1,000-record batch: growth <= 50 MB; a body over the
    limit answers 413 before it is read.

    python -m benchmarks.load [--database postgresql|sqlite|both] [--seconds 30] [--clients 16]
                              [--workers N] [--threads N] [--sqlite-writer-queue]
                              [--worker-connections N] [--reuse-port]

Each wrk phase also prints how its connections were spread over the gunicorn workers (sampled
every half second, the spread seen most often): a gthread worker keeps a keep-alive connection
for good, so an uneven spread puts more requests on one worker than it has threads.

PostgreSQL: a fresh database on the server of REGISTRY_BENCH_POSTGRES_URL (default the local
server), dropped afterwards; SQLite: a file in a temporary folder. Rate limiting is switched off
for the run (the load comes from one token). Prints a table; exits 1 when a bar is missed.
Needs wrk and pgbench (Debian: apt-get install wrk postgresql-client; `make bench-load`
installs wrk).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import fresh_database

ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
MB = 1024 * 1024

# --- set-up ------------------------------------------------------------------------------------

def prepare_database(url: str) -> str:
    """Migrate the benchmark's empty database; returns a submitter token."""
    from alembic import command

    from registry import create_app
    from registry.db import get_database
    from registry.services.health import alembic_config
    from registry.services.access.tokens import add_site, issue_token

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
def gunicorn(url: str, arguments: tuple[str, ...] = (), **settings: str
             ) -> Iterator[tuple[str, subprocess.Popen]]:
    """gunicorn with the shipped config on a free loopback port, `arguments` on its command line
    (which override the config file); yields (host:port, process)."""
    bind = f"127.0.0.1:{_free_port()}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("REGISTRY_", "PROMETHEUS_"))}
    env.update({"DATABASE_URL": url, "REGISTRY_BIND": bind, "REGISTRY_RATE_LIMIT": "off",
                "REGISTRY_LOG_LEVEL": "WARNING", **settings})
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG), *arguments,
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

WRK_THREADS = 2
SUBJECTS_PER_THREAD = 400
# wrk's request() runs once per request in each of its threads: each thread cycles over its own
# subjects, so no two requests in flight share a record, and sends the other of the subject's two
# versions on every lap, so every PUT changes the record (nothing is skipped as unchanged).
_PUT_SCRIPT = """
local token, bodies_file, per_thread = "%(token)s", "%(bodies)s", %(per_thread)d
local threads = 0
function setup(thread)
  thread:set("first", threads * per_thread)
  threads = threads + 1
end
function init(args)
  bodies = {}
  for line in io.lines(bodies_file) do bodies[#bodies + 1] = line end
  headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
  sent = 0
end
function request()
  local subject = first + sent %% per_thread
  local lap = math.floor(sent / per_thread)
  sent = sent + 1
  local path = string.format("/api/v1/records/TOR-load-%%d", %(first)d + subject)
  return wrk.format("PUT", path, headers,
                    bodies[2 * subject + 2 - lap %% 2])
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time of a process (with children=True: of its children that have ended)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[13]) + int(fields[14]) if children else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _tree_cpu(master: int) -> float:
    """CPU time of a server process, its live children and its children that have ended (which
    keeps the count right when gunicorn recycles a worker or PostgreSQL ends a backend)."""
    total = _cpu_seconds(master) + _cpu_seconds(master, children=True)
    for child in _workers_of(master):
        try:
            total += _cpu_seconds(child)
        except OSError:
            pass  # ended meanwhile: counted in the master's children from now on
    return total


def _postmaster_pid(url: str) -> int | None:
    """The local PostgreSQL server's process, when the benchmark can see it (else None)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            folder = connection.execute(text("SHOW data_directory")).scalar_one()
        pid = int(Path(folder, "postmaster.pid").read_text().split()[0])
        _cpu_seconds(pid)
        return pid
    except Exception:  # noqa: BLE001 - a remote or unreadable server: CPU not reported
        return None
    finally:
        engine.dispose()


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - idle) / hz, sum(ticks[:8]) / hz


def _latency_ms(line: str) -> float:
    value = line.split()[1]
    number = value.rstrip("usm")
    return float(number) * _UNITS[value[len(number):]]


def run_wrk(bind: str, seconds: float, clients: int, script: Path) -> dict[str, float]:
    """wrk with `clients` connections for `seconds`: rate, p50/p99 (ms), failures, and CPU
    seconds of the load generator itself."""
    before = os.times()
    finished = subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{clients}", f"-d{seconds:.0f}s", "--latency",
         "--timeout", "10s", "-s", str(script), f"http://{bind}"],
        capture_output=True, text=True, check=True)
    after = os.times()
    figures = {"failed": 0.0, "wrk_cpu": (after.children_user - before.children_user)
               + (after.children_system - before.children_system)}
    for line in finished.stdout.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            figures["rate"] = float(words[1])
        elif words[:1] == ["50.000%"] or words[:1] == ["50%"]:
            figures["p50"] = _latency_ms(line)
        elif words[:1] == ["99.000%"] or words[:1] == ["99%"]:
            figures["p99"] = _latency_ms(line)
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            figures["failed"] += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            figures["failed"] += sum(int(part.split()[-1]) for part in line.split(":", 1)[1]
                                     .split(","))
    if "rate" not in figures or "p99" not in figures:
        raise SystemExit(f"could not read wrk's output:\n{finished.stdout}")
    return figures


def run_pgbench(url: str, seconds: float, clients: int, script: str,
                constants: dict[str, str]) -> dict[str, float]:
    """pgbench with `clients` connections for `seconds`, prepared statements: rate (tps), p50/p99
    (ms, from its per-transaction log), failures, and CPU seconds of pgbench itself."""
    from sqlalchemy.engine import make_url

    if shutil.which("pgbench") is None:
        raise SystemExit("B3's baseline needs pgbench: apt-get install postgresql-client")
    address = make_url(url)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "put.sql").write_text(script)
        command = ["pgbench", "--no-vacuum", "--protocol=prepared", f"--client={clients}",
                   f"--jobs={WRK_THREADS}", f"--time={seconds:.0f}", "--log",
                   f"--log-prefix={folder}/tx", f"--file={folder}/put.sql",
                   f"--host={address.host or '127.0.0.1'}", f"--port={address.port or 5432}",
                   f"--username={address.username or 'postgres'}"]
        for name, value in constants.items():
            command += ["--define", f"{name}={value}"]
        env = {**os.environ, **({"PGPASSWORD": address.password} if address.password else {})}
        before = os.times()
        finished = subprocess.run([*command, address.database], capture_output=True, text=True,
                                  env=env)
        after = os.times()
        if finished.returncode != 0:
            raise SystemExit(f"pgbench failed:\n{finished.stdout}\n{finished.stderr}")
        # Per-transaction log: client, transaction, latency (us), script, epoch s, epoch us.
        latencies = sorted(int(line.split()[2]) / 1000 for log in Path(folder).glob("tx*")
                           for line in log.read_text().splitlines())
    figures = {"wrk_cpu": (after.children_user - before.children_user)
               + (after.children_system - before.children_system), "failed": 0.0}
    for line in finished.stdout.splitlines():
        if line.startswith("tps = "):
            figures["rate"] = float(line.split()[2])
        elif line.startswith("number of failed transactions:"):
            figures["failed"] = float(line.split(":")[1].split()[0])
    if "rate" not in figures or not latencies:
        raise SystemExit(f"could not read pgbench's output:\n{finished.stdout}")
    figures["p50"] = latencies[len(latencies) // 2]
    figures["p99"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return figures


def _connections_per_worker(master: int, port: int) -> tuple[int, ...]:
    """How many established connections to `port` each worker of `master` holds, most first."""
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            established.add(f"socket:[{fields[9]}]")
    counts = []
    for worker in _workers_of(master):
        try:
            descriptors = list(Path(f"/proc/{worker}/fd").iterdir())
        except OSError:
            continue
        held = 0
        for descriptor in descriptors:
            try:
                held += os.readlink(descriptor) in established
            except OSError:
                pass
        counts.append(held)
    return tuple(sorted(counts, reverse=True))


@contextmanager
def connection_spread(master: int, port: int) -> Iterator[dict[str, str]]:
    """Sample _connections_per_worker every half second while the block runs; the dict it
    yields gets "spread": the spread seen most often, e.g. "8/7/1/0"."""
    samples: list[tuple[int, ...]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            spread = _connections_per_worker(master, port)
            if sum(spread):
                samples.append(spread)

    sampler = threading.Thread(target=sample, daemon=True)
    result: dict[str, str] = {}
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        if samples:
            most = max(set(samples), key=samples.count)
            result["spread"] = "/".join(map(str, most))


def _backends_gone(postmaster: int, before: set[int], patience: float = 5.0) -> None:
    """Wait (at most `patience` seconds) until the PostgreSQL processes that began during a
    phase have ended and been reaped: pgbench's backends end just after pgbench, and a backend
    caught while it ends is in neither the live processes nor the server's ended children, which
    understated pgbench's CPU by up to half."""
    deadline = time.monotonic() + patience
    while set(_workers_of(postmaster)) - before and time.monotonic() < deadline:
        time.sleep(0.1)


def measure(postmaster: int | None, seconds: float, run: Callable[[], dict[str, float]],
            gunicorn_pid: int | None = None, bind: str | None = None) -> dict[str, float]:
    """`run` (wrk or pgbench), plus the CPU each request cost in the gunicorn workers, in
    PostgreSQL and in the load generator (ms), how busy the machine was and its load, and (with
    gunicorn's `bind`) how the connections were spread over its workers."""
    load = os.getloadavg()[0]
    app_before = _tree_cpu(gunicorn_pid) if gunicorn_pid else 0.0
    db_before = _tree_cpu(postmaster) if postmaster else 0.0
    pgbench_phase = postmaster is not None and not gunicorn_pid
    backends_before = set(_workers_of(postmaster)) if pgbench_phase else set()
    busy_before, all_before = _machine_busy()
    if gunicorn_pid and bind:
        with connection_spread(gunicorn_pid, int(bind.rsplit(":", 1)[1])) as spread:
            figures: dict[str, Any] = run()
        figures.update(spread)
    else:
        figures = run()
    busy_after, all_after = _machine_busy()
    if pgbench_phase:  # pgbench's own backends end just after it
        _backends_gone(postmaster, backends_before)
    requests = figures["rate"] * seconds
    figures["app_ms"] = ((_tree_cpu(gunicorn_pid) - app_before) / requests * 1000
                         if gunicorn_pid else float("nan"))
    figures["db_ms"] = ((_tree_cpu(postmaster) - db_before) / requests * 1000 if postmaster
                        else float("nan"))
    figures["wrk_ms"] = figures["wrk_cpu"] / requests * 1000
    figures["busy"] = (busy_after - busy_before) / (all_after - all_before)
    figures["load"] = load
    return figures


SUBJECT_PREFIX, FIRST_SUBJECT = "TOR-load-", 10000


def _reset_subjects(url: str, token: str, records: list[dict]) -> None:
    """Store `records` (one per load subject) through the registry, so that every PUT of the
    next phase changes its record (a PUT equal to the stored record writes nothing)."""
    from registry import create_app
    from registry.db import get_database
    from registry.services.intake.batches import submit_batch
    from registry.services.access.tokens import resolve_token

    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        submit_batch(resolve_token(token),
                     [{**record, "subject_id": f"{SUBJECT_PREFIX}{FIRST_SUBJECT + subject}"}
                      for subject, record in enumerate(records)],
                     dry_run=False, atomic=True, max_batch=len(records))
        get_database().engine.dispose()


def _pgbench_put(url: str, token: str, before: dict, after: dict, clients: int
                 ) -> tuple[str, dict[str, str]]:
    """The pgbench script of the statements of a PUT changing `before` into `after`."""
    from benchmarks.put_statements import pgbench_script
    from registry import create_app
    from registry.core.record import canonical
    from registry.db import get_database, utcnow
    from registry.services.intake.record_rows import changes_between
    from registry.services.access.tokens import resolve_token

    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        caller = resolve_token(token)
        get_database().engine.dispose()
    record = canonical({**after, "subject_id": f"{SUBJECT_PREFIX}{FIRST_SUBJECT}"})
    return pgbench_script(
        public_id=caller.public_id, site_id=caller.site_id, token_id=caller.token_id,
        record=record, changed_fields=list(changes_between(canonical(before), record)),
        subject_prefix=SUBJECT_PREFIX, first_subject=FIRST_SUBJECT,
        subjects_per_client=WRK_THREADS * SUBJECTS_PER_THREAD // clients, now=utcnow())


def _cpu_cell(figures: dict[str, Any], app: str = "workers") -> str:
    parts = []
    if figures["app_ms"] == figures["app_ms"]:
        parts.append(f"{app} {figures['app_ms']:.2f}")
    if figures["db_ms"] == figures["db_ms"]:
        parts.append(f"PostgreSQL {figures['db_ms']:.2f}")
    spread = f"; connections per worker {figures['spread']}" if "spread" in figures else ""
    return (f"CPU/request ms: {', '.join(parts)}, load generator {figures['wrk_ms']:.2f}; "
            f"machine {figures['busy']:.0%} busy, load {figures['load']:.1f}{spread}")


def _phase_rows(name: str, figures: dict[str, Any]) -> list[tuple]:
    return [(name, f"{figures['rate']:.0f}/s", f"p50 {figures['p50']:.1f} ms, p99 "
             f"{figures['p99']:.1f} ms, {figures['failed']:.0f} failed", "",
             figures["failed"] == 0),
            ("", "", _cpu_cell(figures), "", None)]


def benchmark_b3(url: str, token: str, seconds: float, clients: int,
                 arguments: tuple[str, ...] = (), **settings: str) -> list[tuple]:
    """B3 rows. PostgreSQL: pgbench running the statements of a PUT and PUT through gunicorn,
    interleaved A-B-B-A; the PUT/pgbench throughput ratio is the bar. Both databases: p99 of a
    PUT; GET /healthz beside it for context."""
    from registry.services.intake.synthetic import synthetic_record

    if shutil.which("wrk") is None:
        raise SystemExit("B3 needs the load generator wrk: apt-get install wrk")
    on_postgres = url.startswith("postgresql")
    if on_postgres and clients % WRK_THREADS:
        raise SystemExit(f"--clients must be a multiple of {WRK_THREADS}")
    rng = random.Random(2016)
    subjects = WRK_THREADS * SUBJECTS_PER_THREAD
    # Three versions of each subject: the first is stored before each PUT phase, the PUTs
    # alternate between the other two, so that every PUT changes the record.
    versions = [[{key: value for key, value in synthetic_record(rng, "TOR").items()
                  if key != "subject_id"} for _ in range(3)] for _ in range(subjects)]
    _reset_subjects(url, token, [triple[0] for triple in versions])
    postmaster = _postmaster_pid(url) if on_postgres else None
    pgbench = _pgbench_put(url, token, versions[0][0], versions[0][1], clients) \
        if on_postgres else None
    phases: dict[str, list[dict[str, float]]] = {"pgbench": [], "put": []}
    sequence: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as folder:
        bodies = Path(folder, "bodies.jsonl")
        bodies.write_text("".join(json.dumps(version) + "\n"
                                  for triple in versions for version in triple[1:]))
        put_script = Path(folder, "put.lua")
        put_script.write_text(_PUT_SCRIPT % {"token": token, "bodies": bodies,
                                             "per_thread": SUBJECTS_PER_THREAD,
                                             "first": FIRST_SUBJECT})
        healthz_script = Path(folder, "healthz.lua")
        healthz_script.write_text('wrk.path = "/healthz"\n')
        with gunicorn(url, arguments, **settings) as (bind, process):
            # Warm-up of each side, so that the first phase is not the one that meets a fresh
            # database (autovacuum after the subjects were stored, catalogue caches, statements
            # not yet prepared): without it the first pgbench phase ran 6 to 30 % below the
            # last, in the PUT's favour.
            run_wrk(bind, 2, clients, healthz_script)
            if on_postgres:
                run_pgbench(url, 3, clients, *pgbench)
            run_wrk(bind, 3, clients, put_script)
            health = measure(postmaster, seconds, lambda: run_wrk(
                bind, seconds, clients, healthz_script), process.pid, bind)
            # A-B-B-A on PostgreSQL (B-B on SQLite): the machine's load drifts, and the
            # interleaving spreads the drift over both.
            for phase in ("pgbench", "put", "put", "pgbench") if on_postgres else ("put", "put"):
                if phase == "pgbench":
                    figures = measure(postmaster, seconds, lambda: run_pgbench(
                        url, seconds, clients, *pgbench))
                else:
                    _reset_subjects(url, token, [triple[0] for triple in versions])
                    figures = measure(postmaster, seconds, lambda: run_wrk(
                        bind, seconds, clients, put_script), process.pid, bind)
                phases[phase].append(figures)
                sequence.append((phase, figures))
    puts = phases["put"]
    put_rate = sum(figures["rate"] for figures in puts) / len(puts)
    put_p99 = max(figures["p99"] for figures in puts)
    rows = _phase_rows("B3 GET /healthz (context)", health)
    rows[0] = (*rows[0][:3], "context", rows[0][4])
    for number, (phase, figures) in enumerate(sequence, 1):
        rows += _phase_rows(f"B3 {number}. " + ("PUT /records/{id}" if phase == "put" else
                                                 "pgbench: a PUT's statements"), figures)
    rows.append(("B3 throughput PUT/healthz", f"{put_rate / health['rate']:.2f}",
                 "context: a request that does nothing", "", None))
    if on_postgres:
        baseline = sum(figures["rate"] for figures in phases["pgbench"]) / len(phases["pgbench"])
        ratio = put_rate / baseline
        rows.append(("B3 throughput PUT/pgbench", f"{ratio:.3f}",
                     f"{put_rate:.0f} against {baseline:.0f}/s (means of the phases)",
                     ">= 0.30", ratio >= 0.3))
        rows.append(("B3 p99 pgbench", f"{max(f['p99'] for f in phases['pgbench']):.1f} ms",
                     "the worse phase", "", None))
    rows.append(("B3 p99 PUT", f"{put_p99:.1f} ms", "the worse phase", "<= 100 ms",
                 put_p99 <= 100))
    return rows


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
    from registry.services.intake.synthetic import synthetic_record

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
    """The figures as a table (a row whose last cell is None has no bar)."""
    header = ("what", "figure", "detail", "bar", "met")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    print("  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(header[:4])) + "  met")
    for row in rows:
        verdict = "" if row[4] is None else "  yes" if row[4] else "  NO"
        print("  ".join(f"{str(cell):<{widths[i]}}" for i, cell in enumerate(row[:4])) + verdict)


def main(argv: list[str] | None = None) -> int:
    """Run B3 and B6; print the table; 1 if a bar is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, help="B3: gunicorn workers (default: the "
                        "shipped config's)")
    parser.add_argument("--threads", type=int, help="B3: threads per gunicorn worker")
    parser.add_argument("--sqlite-writer-queue", action=argparse.BooleanOptionalAction,
                        help="B3: REGISTRY_SQLITE_WRITER_QUEUE on or off (writers wait on a "
                        "file lock; default: the setting's default)")
    parser.add_argument("--worker-connections", type=int, help="B3: gunicorn's "
                        "worker_connections (default 1000): the most connections a worker "
                        "holds; gthread keeps alive at most this minus --threads of them")
    parser.add_argument("--reuse-port", action="store_true", help="B3: gunicorn's reuse_port: "
                        "a listening socket per worker, the kernel spreading connections")
    options = parser.parse_args(argv)
    settings = {name: str(value) for name, value in (("REGISTRY_WORKERS", options.workers),
                                                     ("REGISTRY_THREADS", options.threads))
                if value is not None}
    if options.sqlite_writer_queue is not None:
        settings["REGISTRY_SQLITE_WRITER_QUEUE"] = "on" if options.sqlite_writer_queue else "off"
    arguments = ((f"--worker-connections={options.worker_connections}",)
                 if options.worker_connections else ()) \
        + (("--reuse-port",) if options.reuse_port else ())
    kinds = ["postgresql", "sqlite"] if options.database == "both" else [options.database]
    met = True
    for kind in kinds:
        print(f"\n{kind}: {options.clients} clients, {options.seconds:.0f} s per phase, gunicorn "
              f"with deploy/{GUNICORN_CONFIG.name}"
              f"{''.join(f', {name}={value}' for name, value in settings.items())}"
              f"{''.join(f', {argument}' for argument in arguments)}, load average "
              f"{os.getloadavg()[0]:.1f} before")
        with fresh_database(kind) as url:
            token = prepare_database(url)
            rows = benchmark_b3(url, token, options.seconds, options.clients, arguments,
                                **settings)
            rows += benchmark_b6(url, token)
        print_table(rows)
        met = met and all(row[4] is not False for row in rows)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
