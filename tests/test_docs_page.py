"""The human-readable API documentation at /docs/, rendered by a real (headless) browser."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def served(session_app) -> Iterator[str]:  # noqa: ANN001
    """The app served on a free loopback port."""
    server = make_server("127.0.0.1", 0, session_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def test_docs_page_assets_are_served_locally(client):
    page = client.get("/docs/")
    assert page.status_code == 200 and b"swagger-ui" in page.data
    assert b"/api/v1/openapi.json" in page.data
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.get_data()) > 100_000
    bundle.close()
    assert client.get("/api/v1/openapi.json").json["info"]["title"].startswith("HER2+")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_docs_page_renders_every_operation_in_a_browser(served, tmp_path):
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path}", "--virtual-time-budget=10000",
         "--dump-dom", f"{served}/docs/"],
        capture_output=True, text=True, timeout=90, check=False)
    dom = result.stdout
    assert "HER2+ MBC prolonged-remission registry" in dom, result.stderr[-2000:]
    for summary in ("Create or replace a record", "Submit many records at once",
                    "Withdraw a record", "The database answers"):
        assert summary in dom
