"""Helpers for tests that need a real server or committed writes, outside the rolled-back fixture.

Such tests get a database of their own, beside the test database (PostgreSQL: a sibling database
named <test database>_<suffix>, dropped afterwards; SQLite: a file in a temporary folder), so
nothing they commit is seen by the other tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import TEST_DATABASE_URL, is_postgres

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def on_postgres() -> bool:
    """Whether this test session runs against PostgreSQL."""
    return bool(TEST_DATABASE_URL) and is_postgres(TEST_DATABASE_URL)


# Marks a test that needs PostgreSQL (row locks, pg_terminate_backend, statement timeouts).
needs_postgres = pytest.mark.skipif(not on_postgres(), reason="needs PostgreSQL "
                                    "(set REGISTRY_TEST_DATABASE_URL)")


def _admin_engine(url: str):  # noqa: ANN202
    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


@contextmanager
def own_database(suffix: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own, removed when the block ends; yields its URL."""
    if not on_postgres():
        yield f"sqlite:///{tmp_path / f'{suffix}.db'}"
        return
    base = make_url(TEST_DATABASE_URL)
    name = f"{base.database}_{suffix}"
    admin = _admin_engine(TEST_DATABASE_URL)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a registry server process: this venv's commands first on PATH."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("REGISTRY_", "PROMETHEUS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DATABASE_URL"] = database_url
    env.update(settings)
    return env


def wait_until_ready(base_url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    """Poll /readyz until it answers 200; fail if the process dies or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become ready in time")


@contextmanager
def entrypoint_server(database_url: str, log_path: Path, workers: int = 2,
                      **settings: str) -> Iterator[str]:
    """Run deploy/entrypoint.sh (migrations, then gunicorn with the shipped config) on a free
    loopback port; yields the base URL and stops the server (SIGTERM) at the end."""
    port = free_port()
    env = server_environment(database_url, REGISTRY_BIND=f"127.0.0.1:{port}",
                             REGISTRY_WORKERS=str(workers), REGISTRY_THREADS="4", **settings)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["sh", str(ENTRYPOINT)], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_ready(base_url, process)
            except AssertionError as failure:
                raise AssertionError(f"{failure}:\n{log_path.read_text()[-3000:]}") from None
            yield base_url
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


class TcpProxy:
    """A TCP relay on loopback between the app and PostgreSQL that a test can cut and restore:
    cut() drops every open connection and refuses new ones, as a dead network or server would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._close(end)

    def _close(self, end: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(end)
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self.open = False
        with self.lock:
            ends = list(self.sockets)
        for end in ends:
            self._close(end)

    def restore(self) -> None:
        """Accept and relay connections again."""
        self.open = True

    def close(self) -> None:
        """Stop the relay."""
        self.running = False
        self.cut()
        self.listener.close()
