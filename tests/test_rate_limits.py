"""Rate limits that hold whatever the worker count: the advertised limit is the enforced one
through real gunicorn with 4 workers (workers sharing a file by default, or Redis), and requests
without a valid token are paced per client address, so 3,000 guessed tokens meet 429s.

The limits are lowered through settings so that each server test takes seconds."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from conftest import get_database_of
from live import entrypoint_server, own_database, server_environment
from registry import create_app
from registry.ratelimit_storage import SQLiteStorage
from registry.services.access.tokens import add_site, issue_token
from test_operations import _redis_answers

needs_redis = pytest.mark.skipif(not _redis_answers(), reason="no Redis on 127.0.0.1:6379")


@pytest.fixture()
def app_with(app: Flask, database_url: str) -> Callable[..., Flask]:
    """Factory: another app with some settings changed, on the test's rolled-back transaction."""

    def build(**settings: Any) -> Flask:
        other = create_app({"DATABASE_URL": database_url, "TESTING": True, **settings})
        joined, shared = get_database_of(other), get_database_of(app)
        joined.session_factory = shared.session_factory
        joined.autocommit = shared.autocommit
        joined.transactions = shared.transactions
        return other

    return build


def _from(address: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": address}}


def test_guessed_tokens_spend_the_address_budget_then_meet_429(app_with, site_a):
    client = app_with(REGISTRY_ADDRESS_RATE_LIMIT="5 per minute").test_client()
    guesses = [client.get("/api/v1/records", headers={"Authorization": f"Bearer reg_guess{n}"},
                          **_from("198.51.100.7")) for n in range(8)]
    assert [answer.status_code for answer in guesses] == [401] * 5 + [429] * 3
    assert [answer.headers["X-RateLimit-Remaining"] for answer in guesses[:5]] == \
        ["4", "3", "2", "1", "0"]
    assert all(answer.headers["X-RateLimit-Limit"] == "5" for answer in guesses)
    assert int(guesses[-1].headers["Retry-After"]) > 0
    assert guesses[-1].mimetype == "application/problem+json"
    # Refused before the token is looked at: a valid token from there waits too, so a guess
    # that happens to be right is not told apart.
    assert client.get("/api/v1/records", headers=site_a,
                      **_from("198.51.100.7")).status_code == 429
    assert client.get("/api/v1/records", headers=site_a,
                      **_from("198.51.100.8")).status_code == 200


def test_valid_tokens_do_not_spend_their_address_budget(app_with, site_a):
    client = app_with(REGISTRY_ADDRESS_RATE_LIMIT="2 per minute").test_client()
    for _ in range(5):
        assert client.get("/api/v1/records", headers=site_a,
                          **_from("198.51.100.9")).status_code == 200
    no_token = [client.get("/api/v1/records", **_from("198.51.100.9")).status_code
                for _ in range(3)]
    assert no_token == [401, 401, 429]


def test_every_kind_of_failed_authentication_counts(app_with, site_a):
    client = app_with(REGISTRY_ADDRESS_RATE_LIMIT="4 per minute").test_client()
    kinds = [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "},
             {"Authorization": "Bearer reg_aaaaaaaaaaaa_" + "b" * 43}]
    assert [client.get("/api/v1/records", headers=headers, **_from("203.0.113.4")).status_code
            for headers in kinds] == [401] * 4
    assert client.get("/api/v1/openapi.json", headers={"Authorization": "Bearer x"},
                      **_from("203.0.113.4")).status_code == 429


def test_a_forwarded_address_counts_only_behind_a_trusted_proxy(app_with):
    direct = app_with(REGISTRY_ADDRESS_RATE_LIMIT="2 per minute").test_client()
    spoofed = [direct.get("/api/v1/records", headers={"X-Forwarded-For": f"192.0.2.{n}"},
                          **_from("203.0.113.9")).status_code for n in range(3)]
    assert spoofed == [401, 401, 429]  # a client cannot pick a fresh address per request
    proxied = app_with(REGISTRY_ADDRESS_RATE_LIMIT="2 per minute",
                       REGISTRY_TRUSTED_PROXIES=1).test_client()
    behind_nginx = [proxied.get("/api/v1/records", headers={"X-Forwarded-For": client},
                                **_from("127.0.0.1")).status_code
                    for client in ("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2")]
    assert behind_nginx == [401, 401, 429, 401]
    # nginx appends the address it saw to what the client sent: only that last one counts.
    spoofed_behind_nginx = [proxied.get(
        "/api/v1/records", headers={"X-Forwarded-For": f"192.0.2.{n}, 198.51.100.20"},
        **_from("127.0.0.1")).status_code for n in range(10, 13)]
    assert spoofed_behind_nginx == [401, 401, 429]
    # Behind a proxy that forwards what is not an address: one budget for all of it, and no
    # client text in the counters' keys.
    counters = proxied.application.extensions["registry_limiter"].storage
    not_addresses = [proxied.get("/api/v1/records", headers={"X-Forwarded-For": sent},
                                 **_from("127.0.0.1")).status_code
                     for sent in ("SECA-416_555_0199", "zq-one", "zq-two")]
    assert not_addresses == [401, 401, 429]
    assert not any("416_555" in key or "zq-" in key for key in counters.storage)


def test_an_ipv6_client_counts_as_its_64_network(app_with):
    client = app_with(REGISTRY_ADDRESS_RATE_LIMIT="2 per minute").test_client()
    answers = [client.get("/api/v1/records", **_from(f"2001:db8:1:2::{n}")).status_code
               for n in (1, 2, 3)]
    assert answers == [401, 401, 429]
    assert client.get("/api/v1/records", **_from("2001:db8:1:3::1")).status_code == 401


def test_processes_sharing_the_file_share_one_limit(app_with, site_a, tmp_path):
    storage = f"sqlite:///{tmp_path / 'counters.sqlite'}"
    settings = {"REGISTRY_RATE_LIMIT": "3 per minute", "REGISTRY_RATE_LIMIT_STORAGE": storage}
    first, second = app_with(**settings).test_client(), app_with(**settings).test_client()
    statuses = [client.get("/api/v1/records", headers=site_a).status_code
                for client in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]


def test_the_shared_file_counts_in_windows():
    storage = SQLiteStorage("sqlite:///:memory:")
    assert [storage.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert storage.get("k") == 3 and storage.get_expiry("k") > 0
    assert storage.incr("short", 0) == 1 and storage.incr("short", 0) == 1  # window over
    storage.clear("k")
    assert storage.get("k") == 0 and storage.check()


def test_a_failing_storage_lets_requests_through(app_with, site_a, caplog):
    client = app_with(REGISTRY_RATE_LIMIT_STORAGE="redis://127.0.0.1:1").test_client()
    answer = client.get("/api/v1/records", headers=site_a)
    assert answer.status_code == 200 and "X-RateLimit-Limit" not in answer.headers
    assert "rate-limit storage unavailable" in caplog.text


# --- through real gunicorn with 4 workers --------------------------------------------------------

def _requests(base: str, paths_and_headers: list[tuple[str, dict[str, str]]], threads: int,
              keep_alive: bool) -> list[tuple[int, dict[str, str]]]:
    """Send the requests from `threads` threads; each answer's status and headers, in order."""
    host, port = base.removeprefix("http://").split(":")
    answers: list[tuple[int, dict[str, str]] | None] = [None] * len(paths_and_headers)

    def work(offset: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        for index in range(offset, len(paths_and_headers), threads):
            path, headers = paths_and_headers[index]
            if not keep_alive:
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {**headers, "Connection": "close"}
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            answers[index] = (response.status, dict(response.getheaders()))
            if not keep_alive:
                connection.close()
        connection.close()

    workers = [threading.Thread(target=work, args=(offset,)) for offset in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [answer for answer in answers if answer is not None]


def _issue_token(url: str, new_site: bool = True) -> str:
    """A submitter token of TOR in the server's database (issued in this process: quicker than
    the command line, and the same service)."""
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        if new_site:
            add_site("TOR", "Toronto")
        secret = issue_token("submitter", "TOR")[1]
    get_database_of(app).engine.dispose()
    return secret


def _counts_per_worker(metrics_dir: Path) -> dict[str, float]:
    """The sum of every counter of each worker process (each writes metric files of its pid):
    it grows with every request the worker answers."""
    from prometheus_client.mmap_dict import MmapedDict

    return {name.removeprefix("counter_").removesuffix(".db"):
            sum(value for _key, value, *_ in MmapedDict.read_all_values_from_file(
                str(metrics_dir / name)))
            for name in os.listdir(metrics_dir) if name.startswith("counter_")}


def _workers_that_answered(before: dict[str, float], after: dict[str, float]) -> int:
    """How many workers answered requests between two _counts_per_worker()."""
    return sum(count > before.get(pid, 0) for pid, count in after.items())


def _check_advertised_limit_is_enforced(base: str, secret: str, limit: int) -> None:
    bearer = {"Authorization": f"Bearer {secret}"}
    answers = _requests(base, [("/api/v1/records?limit=1", bearer)] * (limit + 40), threads=8,
                        keep_alive=False)
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: limit, 429: 40}, statuses
    assert {headers["X-RateLimit-Limit"] for _, headers in answers} == {str(limit)}


def _check_guessing_meets_429(base: str, secret: str, address_limit: int) -> None:
    # Each guess claims another address: no proxy is trusted, so the header counts for nothing.
    guesses = [("/api/v1/records", {"Authorization": f"Bearer reg_{uuid.uuid4().hex[:12]}_"
                                                     + uuid.uuid4().hex * 2,
                                    "X-Forwarded-For": f"10.{n // 250}.{n % 250}.1"})
               for n in range(3000)]
    answers = _requests(base, guesses, threads=8, keep_alive=True)
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) == {401, 429}, statuses
    # A failed guess spends when answered: at most the requests in flight pass the limit.
    assert address_limit <= statuses[401] <= address_limit + 8, statuses
    assert all("X-RateLimit-Limit" in headers for _, headers in answers)
    [(status, _)] = _requests(base, [("/api/v1/records", {"Authorization": f"Bearer {secret}"})],
                              threads=1, keep_alive=True)
    assert status == 429  # the address waits, whoever holds the right token


def _check_malformed_requests_repeat_nothing(base: str) -> None:
    """gunicorn itself answers requests it cannot parse: its answer quotes nothing sent."""
    from test_deploy import _raw_request

    for head in ("GET /api/v1/records/SECA-416_555_0199 HTTP/1.1x\r\nHost: x\r\n\r\n",
                 "GET /api/v1/records/SECA 416_555_0199 HTTP/1.1\r\nHost: x\r\n\r\n",
                 "GET /api/v1/records HTTP/1.1\r\nHost: x\r\nX-Bad\x01: SECA-416_555_0199"
                 "\r\n\r\n"):
        answer = _raw_request(base, head, [])
        assert answer.startswith("HTTP/1.1 400") and "416_555_0199" not in answer, answer


def _check_raw_header_bytes_answer_4xx(base: str, secret: str) -> None:
    """Header values as bytes reach the app through gunicorn (bytes outside ASCII and UTF-8,
    NUL, a folded line, 8,000 digits): each is a 4xx that repeats nothing."""
    from test_deploy import _raw_request

    sent = b"SECA-416_555_0199"
    for header in (b'If-Match: "\xff\xfe' + sent + b'"', b'If-None-Match: "\xc3\xa9' + sent + b'"',
                   b'If-Match: "1\x00' + sent + b'"', b"If-Match: " + b"9" * 8000,
                   b"X-Request-ID: abc\r\n " + sent, b"Accept: " + sent + b"/\xff",
                   b"Content-Type: application/json; charset=" + sent):
        request = (b"PUT /api/v1/records/TOR-abcdefghijklmnop HTTP/1.1\r\nHost: x\r\n"
                   b"Authorization: Bearer " + secret.encode() + b"\r\n" + header
                   + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                   b"Connection: close\r\n\r\n{}")
        answer = _raw_request(base, "", [request])
        assert answer[9:10] == "4" and "416_555_0199" not in answer, answer[:200]


def test_gunicorn_with_4_workers_enforces_the_advertised_limits(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    with own_database("limits", tmp_path) as url:
        with entrypoint_server(url, tmp_path / "server.log", workers=4,
                               REGISTRY_RATE_LIMIT="120 per minute",
                               REGISTRY_ADDRESS_RATE_LIMIT="50 per minute",
                               PROMETHEUS_MULTIPROC_DIR=str(metrics)) as base:
            secret = _issue_token(url)
            secrets = [secret]
            _check_raw_header_bytes_answer_4xx(base, _issue_token(url, new_site=False))
            # gunicorn lets whichever worker wakes first accept a burst of connections, so on a
            # busy machine one worker may answer them all: then the counters were not shared
            # across workers in that round, and the check runs again with a fresh token.
            for _round in range(4):
                before = _counts_per_worker(metrics)
                _check_advertised_limit_is_enforced(base, secret, 120)
                if _workers_that_answered(before, _counts_per_worker(metrics)) >= 2:
                    break
                secret = _issue_token(url, new_site=False)
                secrets.append(secret)
            else:
                pytest.fail("one worker answered every request of four rounds")
            _check_guessing_meets_429(base, secret, 50)
            _check_malformed_requests_repeat_nothing(base)
        logged = (tmp_path / "server.log").read_text()
    assert not any(secret in logged for secret in secrets)
    assert "reg_" not in logged and "416_555_0199" not in logged
    assert "Invalid request from ip=" in logged  # gunicorn did log the malformed requests


@needs_redis
def test_gunicorn_with_4_workers_on_redis_enforces_the_advertised_limit(tmp_path: Path) -> None:
    with own_database("limitsredis", tmp_path) as url:
        with entrypoint_server(url, tmp_path / "server.log", workers=4,
                               REGISTRY_RATE_LIMIT="120 per minute",
                               REGISTRY_RATE_LIMIT_STORAGE="redis://127.0.0.1:6379",
                               REGISTRY_RATE_LIMIT_PREFIX=f"test-i11-{uuid.uuid4().hex}") as base:
            _check_advertised_limit_is_enforced(base, _issue_token(url), 120)


def test_gunicorn_refuses_per_worker_counters_with_several_workers(tmp_path: Path) -> None:
    env = server_environment(f"sqlite:///{tmp_path / 'x.db'}", REGISTRY_WORKERS="4",
                             REGISTRY_RATE_LIMIT_STORAGE="memory://")
    done = subprocess.run([sys.executable, "-c", "import runpy; runpy.run_path("
                           "'deploy/gunicorn.conf.py')"], cwd=Path(__file__).parents[1],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Redis" in done.stderr
