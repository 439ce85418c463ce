"""A real registry app served on loopback with its own database, for end-to-end sync tests.

It cannot use the rolled-back transaction of conftest.py (the sync talks to it over HTTP from
another thread), so it gets its own database: a temporary SQLite file, or on PostgreSQL a schema
of its own in the test database, dropped at the end.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from registry import create_app
from registry.db import get_database, make_engine
from registry.services.intake.synthetic import synthetic_record
from registry.services.access.tokens import add_site, issue_token
from tests.fake_redcap import ServerThread, site_rows


class CapturingMiddleware:
    """Keeps every request the registry receives (method, URL, body) for privacy checks."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.captured: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        import io

        environ["wsgi.input"] = io.BytesIO(body)
        self.captured.append(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}?"
                             f"{environ.get('QUERY_STRING', '')} {body.decode(errors='replace')}")
        return self.app(environ, start_response)


@contextmanager
def registry_database(tmp_path: Path) -> Iterator[str]:
    """A migrated database of its own: SQLite file, or a PostgreSQL schema (dropped after)."""
    from tests.conftest import TEST_DATABASE_URL, is_postgres, migrate

    if TEST_DATABASE_URL and is_postgres(TEST_DATABASE_URL):
        schema = f"redcap_e2e_{uuid.uuid4().hex[:8]}"
        engine = make_engine(TEST_DATABASE_URL)
        with engine.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        url = make_url(TEST_DATABASE_URL).update_query_dict(
            {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        try:
            migrate(url)
            yield url
        finally:
            with engine.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            engine.dispose()
    else:
        url = f"sqlite:///{tmp_path / 'registry-e2e.db'}"
        migrate(url)
        yield url


@contextmanager
def registry_server(tmp_path: Path) -> Iterator[tuple[Any, CapturingMiddleware, str]]:
    """(app, traffic capture, base URL) of a registry served on 127.0.0.1."""
    with registry_database(tmp_path) as url:
        # No statement timeout: its connect option would replace the schema's search_path.
        app = create_app({"DATABASE_URL": url, "REGISTRY_STATEMENT_TIMEOUT_MS": 0,
                          "REGISTRY_PUBLIC_URL": "https://registry.test"})
        capture = CapturingMiddleware(app)
        try:
            with ServerThread(capture) as server:
                yield app, capture, server.url
        finally:
            with app.app_context():
                get_database().engine.dispose()


def new_site(app: Any, code: str) -> str:
    """Register a site and return a submitter token for it."""
    with app.app_context():
        add_site(code, f"{code} centre")
        _, secret = issue_token("submitter", code)
    return secret


def source_records(count: int, seed: int = 7, local_id: Callable[[int], str] = "pt{:05d}".format
                   ) -> list[tuple[str, dict[str, Any], date]]:
    """(the site's local record id, the registry record it must become, its day 0) for `count`
    patients; `local_id` names the n-th patient."""
    rng = random.Random(seed)
    made = []
    for number in range(count):
        record = synthetic_record(rng, "SRC")
        record.pop("subject_id")
        day_zero = date(record["met_dx_year"], rng.randint(1, 12), rng.randint(1, 28))
        made.append((local_id(number), record, day_zero))
    return made


def load_project(fake: Any, records: list[tuple[str, dict[str, Any], date]]) -> None:
    """Enter the records into the fake REDCap project as a site would."""
    for record_id, record, day_zero in records:
        fake.save(record_id, site_rows(record, day_zero, longitudinal=fake.longitudinal))


def environment_of(state_dir: Path, redcap_url: str, registry_url: str, token: str,
                   redcap_token: str) -> dict[str, str]:
    """The environment a site would set for the sync."""
    return {"REDCAP_API_URL": redcap_url + "/api/", "REDCAP_API_TOKEN": redcap_token,
            "REGISTRY_URL": registry_url, "REGISTRY_TOKEN": token,
            "REGISTRY_SITE_SECRET": "s" * 16 + os.urandom(16).hex(),
            "REGISTRY_SYNC_STATE_DIR": str(state_dir)}
