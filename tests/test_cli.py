"""The operator's command line (api.md): sites, tokens, demo data, openapi."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from registry.db import unit_of_work
from registry.models import ApiToken, Record


def invoke(app, *args: str):  # noqa: ANN001, ANN201
    return app.test_cli_runner().invoke(args=list(args))


def test_sites_add_and_list(app):
    result = invoke(app, "sites", "add", "TOR", "--name", "Toronto centre")
    assert result.exit_code == 0, result.output
    listed = invoke(app, "sites", "list")
    assert "TOR\tToronto centre" in listed.output
    again = invoke(app, "sites", "add", "TOR", "--name", "Again")
    assert again.exit_code != 0 and "already registered" in again.output


def test_site_codes_are_checked(app):
    result = invoke(app, "sites", "add", "T", "--name", "Too short")
    assert result.exit_code != 0 and "2 to 16 letters or digits" in result.output


def test_tokens_issue_prints_the_secret_alone_on_the_last_line(app, client):
    invoke(app, "sites", "add", "TOR", "--name", "Toronto")
    result = invoke(app, "tokens", "issue", "--site", "TOR", "--role", "submitter")
    assert result.exit_code == 0, result.output
    secret = result.output.rstrip("\n").split("\n")[-1]
    assert re.fullmatch(r"reg_[a-z0-9]{12}_[A-Za-z0-9_-]{43}", secret)
    assert client.get("/api/v1/records",
                      headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_coordinator_tokens_have_no_site_and_submitters_need_one(app):
    assert invoke(app, "tokens", "issue", "--role", "coordinator").exit_code == 0
    assert invoke(app, "tokens", "issue", "--role", "submitter").exit_code != 0
    invoke(app, "sites", "add", "TOR", "--name", "Toronto")
    assert invoke(app, "tokens", "issue", "--role", "steward", "--site", "TOR").exit_code != 0
    assert invoke(app, "tokens", "issue", "--role", "submitter", "--site", "XXX").exit_code != 0


def test_tokens_list_never_shows_a_secret_and_revoke_works(app, client):
    invoke(app, "sites", "add", "TOR", "--name", "Toronto")
    issued = invoke(app, "tokens", "issue", "--site", "TOR", "--role", "submitter",
                    "--label", "data manager")
    secret = issued.output.rstrip("\n").split("\n")[-1]
    public_id = secret.split("_")[1]
    listing = invoke(app, "tokens", "list", "--site", "TOR").output
    assert public_id in listing and "data manager" in listing
    assert secret.split("_", 2)[2] not in listing
    assert invoke(app, "tokens", "revoke", public_id).exit_code == 0
    assert client.get("/api/v1/records",
                      headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert invoke(app, "tokens", "revoke", "nosuchtoken").exit_code != 0
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(ApiToken)) == 1


def test_demo_data_loads_valid_records_and_is_idempotent(app):
    first = invoke(app, "demo-data", "--records-per-site", "20")
    assert first.exit_code == 0, first.output
    assert "created 20" in first.output and "rejected 0" in first.output
    second = invoke(app, "demo-data", "--records-per-site", "20")
    assert "unchanged 20" in second.output
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Record)) == 80


def test_openapi_write(app, tmp_path):
    target = tmp_path / "spec.yaml"
    assert invoke(app, "openapi", "write", str(target)).exit_code == 0
    assert target.read_text().startswith("paths:") or "openapi: 3" in target.read_text()
