"""Deployment: the image's entrypoint really migrates and serves; the shipped files say what they
should; the README's settings table is SETTINGS."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import yaml

from conftest import EXAMPLE_RECORD, migrate, without_subject
from live import (
    ROOT, entrypoint_server, free_port, own_database, server_environment, wait_until_ready,
)
from registry.config import SETTINGS, settings_table

BODY_LIMIT = 256 * 1024
DEPLOY_REQUEST_ID = "d3b07384d113edec49eaa6238ad5ff00"  # the shape of nginx's $request_id


def _registry_cli(database_url: str, *args: str) -> str:
    done = subprocess.run(["registry", *args], cwd=ROOT, env=server_environment(database_url),
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def _raw_request(base_url: str, head: str, body_chunks: list[bytes]) -> str:
    """Send a request by hand (to control framing); return the status line and headers."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(head.encode())
        try:
            for chunk in body_chunks:
                connection.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent
        answer = b""
        try:
            while True:
                piece = connection.recv(65536)
                if not piece:
                    break
                answer += piece
        except ConnectionResetError:
            pass
    return answer.decode("latin-1")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=10) as answer:
        return answer.status, dict(answer.headers), answer.read()


def test_entrypoint_migrates_then_serves_with_the_shipped_config(tmp_path: Path) -> None:
    with own_database("entry", tmp_path) as url:
        log_path = tmp_path / "server.log"
        home = tmp_path / "home"
        home.mkdir()
        # HOME of its own: gunicorn's default control socket would be ~/.gunicorn/gunicorn.ctl.
        with entrypoint_server(url, log_path, REGISTRY_MAX_BODY_BYTES=str(BODY_LIMIT),
                               REGISTRY_PUBLIC_URL="https://registry.test", HOME=str(home),
                               XDG_RUNTIME_DIR=str(home)) as base:
            status, _, body = _get(f"{base}/readyz")
            # No control socket: a shared one was removed under other instances when one
            # stopped (gunicorn removes its socket when it stops).
            assert list(home.rglob("*")) == [], "gunicorn made a control socket"
            ready = json.loads(body)
            assert status == 200 and ready["status"] == "ready"
            assert ready["schema_revision"]

            _registry_cli(url, "sites", "add", "TOR", "--name", "Toronto")
            secret = _registry_cli(url, "tokens", "issue", "--site", "TOR",
                                   "--role", "submitter").strip().splitlines()[-1]
            subject_id, record = without_subject(EXAMPLE_RECORD)
            put = urllib.request.Request(
                f"{base}/api/v1/records/{subject_id}", method="PUT",
                data=json.dumps(record).encode(),
                headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json",
                         "X-Request-ID": DEPLOY_REQUEST_ID})
            with urllib.request.urlopen(put, timeout=10) as answer:
                assert answer.status == 201
                assert answer.headers["X-Request-ID"] == DEPLOY_REQUEST_ID

            # Declared too large: 413 at once, without the server waiting for the body.
            too_big = _raw_request(base, (
                f"PUT /api/v1/records/{subject_id} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {50 * 1024 * 1024}\r\nConnection: close\r\n\r\n"), [b"{"])
            assert too_big.startswith("HTTP/1.1 413"), too_big[:200]
            assert "application/problem+json" in too_big

            # Streamed without a length (chunked): cut off at the limit, 413.
            chunk = b"[" * 16384
            framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            streamed = _raw_request(base, (
                "POST /api/v1/records/batch HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"),
                [framed] * (2 * BODY_LIMIT // len(chunk)) + [b"0\r\n\r\n"])
            assert streamed.startswith("HTTP/1.1 413"), streamed[-400:]

            status, headers, body = _get(f"{base}/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            metrics = body.decode()
            # Summed over the workers (multiprocess mode), labelled by route template.
            assert re.search(r'registry_http_requests_total\{method="PUT",'
                             r'route="/api/v1/records/<subject_id>",status="201"\} 1\.0', metrics)
            assert 'registry_records_total{outcome="created",via="put"} 1.0' in metrics
            assert subject_id not in metrics
        logged = log_path.read_text()

    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("message") == "request"]
    put_line = next(line for line in requests if line.get("request_id") == DEPLOY_REQUEST_ID)
    assert put_line["route"] == "/api/v1/records/<subject_id>"
    assert put_line["status"] == 201 and put_line["role"] == "submitter"
    assert put_line["token"] and put_line["token"] in secret
    assert subject_id not in logged and secret not in logged
    assert any(line.get("logger", "").startswith("gunicorn") for line in lines)


def test_shipped_gunicorn_logger_builds_no_access_lines(tmp_path: Path) -> None:
    # gunicorn's own logger, given the shipped logging config, would build every request's
    # access line (and fail on these empty arguments); the shipped one builds nothing.
    probe = (
        "import runpy; from gunicorn.config import Config; from gunicorn.glogging import Logger\n"
        "shipped = runpy.run_path('deploy/gunicorn.conf.py')\n"
        "config = Config(); config.set('logconfig_dict', shipped['logconfig_dict'])\n"
        "shipped['logger_class'](config).access(None, None, {}, None)\n"
        "try:\n"
        "    Logger(config).access(None, None, {}, None)\n"
        "except AttributeError:\n"
        "    print('stock logger builds the line')\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          env={**server_environment("sqlite://"),
                               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "stock logger builds the line"


def test_compose_file_runs_the_app_on_a_healthy_postgresql() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    db, app = compose["services"]["db"], compose["services"]["app"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in db["volumes"])
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "/readyz" in " ".join(app["healthcheck"]["test"])
    environment = app["environment"]
    assert environment["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@db:5432/" in environment["DATABASE_URL"]
    assert {"PROMETHEUS_MULTIPROC_DIR", "REGISTRY_RATE_LIMIT_STORAGE"} <= set(environment)
    # Rate limits counted once for every worker and instance: in the compose file's Redis.
    assert "redis://redis:6379" in environment["REGISTRY_RATE_LIMIT_STORAGE"]
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert compose["services"]["redis"]["image"].startswith("redis:")
    assert set(environment) - {"DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "REGISTRY_WORKERS"} \
        <= {name for name, _, _ in SETTINGS}
    # No password written into the file: it comes from deploy/.env.
    assert "${POSTGRES_PASSWORD" in db["environment"]["POSTGRES_PASSWORD"]


def test_image_runs_as_a_user_and_starts_through_the_entrypoint() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
    assert 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile
    entrypoint = (ROOT / "deploy" / "entrypoint.sh").read_text()
    assert entrypoint.index("registry db upgrade") < entrypoint.index("exec gunicorn")


def test_readme_settings_table_is_the_settings_list() -> None:
    readme = (ROOT / "README.md").read_text()
    assert settings_table() in readme, (
        "README.md's settings table differs from registry/config.py SETTINGS: paste the output "
        "of `registry settings` into the section 'Deploying and operating'")



def _make_run_serve_command(bind: str) -> str:
    """The command with which `make run` serves, as make itself spells it out (make -n)."""
    shown = subprocess.run(["make", "-n", "run", f"BIND={bind}", f"VENV={sys.prefix}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    command = shown.stdout.split("REGISTRY_BIND=", 1)[1]
    return "REGISTRY_BIND=" + command.replace("\\\n", " ").strip()


@pytest.mark.parametrize("level, quiet", [(None, True), ("INFO", False)])
def test_make_run_serves_without_request_lines_so_its_tokens_stay_on_screen(
        tmp_path: Path, level: str | None, quiet: bool) -> None:
    """`make run` prints the demo tokens and then serves: no line per request may push them
    off the screen; REGISTRY_LOG_LEVEL=INFO brings the request lines back (as the README says)."""
    with own_database("makerun", tmp_path) as url:
        migrate(url)
        port = free_port()
        env = server_environment(url, HOME=str(tmp_path), REGISTRY_WORKERS="1",
                                 **({"REGISTRY_LOG_LEVEL": level} if level else {}))
        log_path = tmp_path / "served.log"
        with open(log_path, "wb") as log:
            # A session of its own: the stop reaches gunicorn, not only the shell that runs it.
            server = subprocess.Popen(["sh", "-c", _make_run_serve_command(f"127.0.0.1:{port}")],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            try:
                base = f"http://127.0.0.1:{port}"
                wait_until_ready(base, server)
                for path in ("/api/v1/records", "/api/v1/dictionary", "/healthz"):
                    try:
                        urllib.request.urlopen(base + path, timeout=10).read()
                    except urllib.error.HTTPError:
                        pass  # 401 without a token: a request all the same
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=40)
        served = log_path.read_text()
    request_lines = [line for line in served.splitlines() if '"registry.requests"' in line]
    assert (request_lines == []) is quiet, served[-3000:]
