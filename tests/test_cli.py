"""The operator's command line (api.md): sites, tokens, demo data, openapi."""

from __future__ import annotations

import re

from click.testing import CliRunner
from sqlalchemy import func, select

from registry.cli import main
from registry.db import unit_of_work
from registry.models import ApiToken, Record
from registry.services.intake.synthetic import DEMO_SITES


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
    sizes = [round(20 * size) for _, _, size in DEMO_SITES]
    for (code, _, _), size in zip(DEMO_SITES, sizes):
        assert f"{code}: created {size}, updated 0, unchanged 0, rejected 0" in first.output
    second = invoke(app, "demo-data", "--records-per-site", "20")
    assert f"{DEMO_SITES[0][0]}: created 0, updated 0, unchanged {sizes[0]}" in second.output
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Record)) == sum(sizes) == 160


def test_demo_tokens_replace_the_earlier_ones(app, client, tmp_path):
    """Each `make run` issues demo tokens and revokes those of the run before."""
    target = tmp_path / "demo-tokens.env"
    runs = []
    for _ in range(2):
        result = invoke(app, "demo-data", "--records-per-site", "2", "--tokens", str(target))
        assert result.exit_code == 0, result.output
        exported = dict(line.removeprefix("export ").split("=", 1)
                        for line in target.read_text().splitlines())
        assert set(exported) == {"TOKEN", "COORDINATOR_TOKEN"}
        assert target.stat().st_mode & 0o077 == 0, "the token file is private"
        assert all(f"export {name}={value}" in result.output for name, value in exported.items())
        runs.append(exported)

    def status(token: str, path: str) -> int:
        return client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code
    assert status(runs[0]["TOKEN"], "/api/v1/records") == 401
    assert status(runs[0]["COORDINATOR_TOKEN"], "/api/v1/aggregates/dimensions") == 401
    assert status(runs[1]["TOKEN"], "/api/v1/records") == 200
    assert status(runs[1]["COORDINATOR_TOKEN"], "/api/v1/aggregates/dimensions") == 200


def test_registry_help_lists_only_the_operators_commands():
    shown = CliRunner().invoke(main, ["--help"]).output
    commands = shown.split("Commands:")[1].split()
    for name in ("db", "sites", "tokens", "demo-data", "openapi", "redcap", "settings"):
        assert name in commands
    for flasks_own in ("run", "shell", "routes", "limiter", "--app", "--debug", "--env-file"):
        assert flasks_own not in shown.split()


def test_openapi_write(app, tmp_path):
    target = tmp_path / "spec.yaml"
    assert invoke(app, "openapi", "write", str(target)).exit_code == 0
    assert target.read_text().startswith("paths:") or "openapi: 3" in target.read_text()
