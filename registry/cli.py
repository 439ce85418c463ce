"""The operator's command line: `registry ...` (also `flask --app registry ...`).

Commands that create a secret print it alone on the last line of standard output.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml
from alembic import command as alembic_command
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo, with_appcontext

from registry.core.vocabulary import ROLES
from registry.errors import RegistryError


def _fail_cleanly(error: RegistryError) -> None:
    messages = "; ".join(f"{e['field']}: {e['message']}" for e in error.extra.get("errors", []))
    raise click.ClickException(messages or error.detail)


def _alembic_config():  # noqa: ANN202
    from registry.services.health import alembic_config

    return alembic_config(current_app.config["DATABASE_URL"])


db_cli = AppGroup("db", help="Database schema: migrations.")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database to REVISION (default: the newest)."""
    alembic_command.upgrade(_alembic_config(), revision)
    click.echo(f"database at revision {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' for an empty database)."""
    alembic_command.downgrade(_alembic_config(), revision)
    click.echo(f"database at revision {revision}")


@db_cli.command("current")
def db_current() -> None:
    """Show the database's revision."""
    alembic_command.current(_alembic_config())


@db_cli.command("check")
def db_check() -> None:
    """Fail if the models hold changes that no migration has."""
    alembic_command.check(_alembic_config())


@db_cli.command("revision")
@click.option("-m", "--message", required=True, help="what the migration changes")
def db_revision(message: str) -> None:
    """Write a new migration from the difference between models and database."""
    alembic_command.revision(_alembic_config(), message=message, autogenerate=True)


sites_cli = AppGroup("sites", help="Partner sites.")


@sites_cli.command("add")
@click.argument("code")
@click.option("--name", required=True, help="the centre's name")
def sites_add(code: str, name: str) -> None:
    """Register a site under CODE (2 to 16 letters or digits)."""
    from registry.services.access.tokens import add_site

    try:
        site = add_site(code, name)
    except RegistryError as error:
        _fail_cleanly(error)
    click.echo(f"site {site.code} registered")


@sites_cli.command("list")
def sites_list() -> None:
    """List the registered sites."""
    from registry.services.access.tokens import list_sites

    for site in list_sites():
        click.echo(f"{site.code}\t{site.name}\t{site.created_at:%Y-%m-%d}")


tokens_cli = AppGroup("tokens", help="API tokens: issue (shown once), list, revoke.")


@tokens_cli.command("issue")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--site", "site_code", help="the site of a submitter token")
@click.option("--label", help="a note to recognise the token by (who holds it)")
def tokens_issue(role: str, site_code: str | None, label: str | None) -> None:
    """Issue a token. The token is printed once, alone on the last line; keep it safe."""
    from registry.services.access.tokens import issue_token

    try:
        token, secret = issue_token(role, site_code, label)
    except RegistryError as error:
        _fail_cleanly(error)
    click.echo(f"issued token {token.public_id} ({role}{', site ' + site_code if site_code else ''})"
               "; it is shown only now:", err=False)
    click.echo(secret)


@tokens_cli.command("list")
@click.option("--site", "site_code", help="only the tokens of this site")
def tokens_list(site_code: str | None) -> None:
    """List tokens: id, role, site, created, last used, revoked. Never the token itself."""
    from registry.services.access.tokens import list_tokens

    click.echo("id\trole\tsite\tcreated\tlast_used\trevoked\tlabel")
    for token in list_tokens(site_code):
        when = lambda moment: f"{moment:%Y-%m-%d %H:%M}" if moment else "-"  # noqa: E731
        click.echo("\t".join([
            token.public_id, token.role, token.site.code if token.site else "-",
            when(token.created_at), when(token.last_used_at), when(token.revoked_at),
            token.label or "-"]))


@tokens_cli.command("revoke")
@click.argument("token_id")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token by its id (see `tokens list`); it fails from the next request on."""
    from registry.services.access.tokens import revoke_token

    try:
        revoke_token(token_id)
    except RegistryError as error:
        _fail_cleanly(error)
    click.echo(f"token {token_id} revoked")


@tokens_cli.command("budget")
@click.argument("token_id")
@click.argument("questions", type=click.IntRange(min=1), required=False)
def tokens_budget(token_id: str, questions: int | None) -> None:
    """Let one token ask QUESTIONS distinct aggregate questions per release (a steward's
    decision, privacy.md 2.3); without QUESTIONS, back to REGISTRY_QUESTION_BUDGET."""
    from registry.services.access.tokens import set_question_budget

    try:
        set_question_budget(token_id, questions)
    except RegistryError as error:
        _fail_cleanly(error)
    click.echo(f"token {token_id}: " + (f"{questions} distinct questions per release"
                                        if questions else "the registry's question budget"))


@click.command("demo-data")
@click.option("--records-per-site", default=600, show_default=True,
              help="records per site on average (larger demo centres hold more)")
@click.option("--seed", default=2016, show_default=True)
@click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False, path_type=Path),
              help="also revoke the demo tokens issued before, issue new ones and write them "
                   "to this file as `export` lines (demo only: never in production)")
@with_appcontext
def demo_data(records_per_site: int, seed: int, tokens_file: Path | None) -> None:
    """Register eight demo sites and load synthetic (made-up) valid records."""
    from registry.services.intake.synthetic import issue_demo_tokens, load_demo_data

    for site, summary in load_demo_data(records_per_site, seed).items():
        click.echo(f"{site}: " + ", ".join(f"{k} {n}" for k, n in summary.items()))
    if tokens_file is not None:
        lines = "".join(f"export {name}={secret}\n"
                        for name, secret in issue_demo_tokens().items())
        tokens_file.parent.mkdir(parents=True, exist_ok=True)
        tokens_file.touch(mode=0o600)
        tokens_file.chmod(0o600)
        tokens_file.write_text(lines)
        click.echo(f"demo tokens (earlier ones revoked), also in {tokens_file}:")
        click.echo(lines, nl=False)


releases_cli = AppGroup("releases", help="Releases: frozen states of the data for aggregates.")


@releases_cli.command("cut")
@click.option("--note", help="a short note: what the release is for")
def releases_cut(note: str | None) -> None:
    """Cut a release of the current data; its id is printed alone on the last line."""
    from registry.services.window.disclosure import Policy
    from registry.services.window.releases import cut_release

    try:
        release = cut_release(None, note, Policy.from_config(current_app.config))
    except RegistryError as error:
        _fail_cleanly(error)
    click.echo(f"cut release {release['id']}: {release['record_count']} records, "
               f"{release['changes']} created, changed or withdrawn since the previous one")
    click.echo(str(release["id"]))


@releases_cli.command("list")
def releases_list() -> None:
    """List the releases, newest first: id, time, records, changes, note."""
    from registry.services.window.releases import list_releases

    click.echo("id\tcut_at\trecords\tchanges\tnote")
    for release in list_releases():
        click.echo(f"{release['id']}\t{release['cut_at']:%Y-%m-%d %H:%M}\t"
                   f"{release['record_count']}\t{release['changes']}\t{release['note'] or '-'}")


openapi_cli = AppGroup("openapi", help="The OpenAPI contract.")


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases: a shared list is written out at each use."""

    def ignore_aliases(self, data: object) -> bool:
        """Never write an alias."""
        return True


def openapi_text(fmt: str = "yaml") -> str:
    """The OpenAPI document the code generates, as YAML or JSON text."""
    spec = current_app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    if fmt == "json":
        return json.dumps(spec, indent=2) + "\n"
    return yaml.dump(spec, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=100)


@openapi_cli.command("write")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def openapi_write(path: Path) -> None:
    """Write the OpenAPI document to PATH (YAML, or JSON for a .json name)."""
    path.write_text(openapi_text("json" if path.suffix == ".json" else "yaml"))
    click.echo(f"wrote {path}")


@openapi_cli.command("print")
def openapi_print() -> None:
    """Print the OpenAPI document as YAML."""
    click.echo(openapi_text(), nl=False)


redcap_cli = AppGroup("redcap", help="The REDCap data dictionary sites import.")


@redcap_cli.command("dictionary")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def redcap_dictionary(path: Path) -> None:
    """Write the REDCap data dictionary (CSV) to PATH."""
    from registry.core.redcap_dictionary import dictionary_csv

    path.write_text(dictionary_csv())
    click.echo(f"wrote {path}")


@click.command("settings")
def settings() -> None:
    """Print every setting with its default and meaning (the README's table)."""
    from registry.config import settings_table

    click.echo(settings_table(), nl=False)


COMMANDS = (db_cli, sites_cli, tokens_cli, demo_data, releases_cli, openapi_cli, redcap_cli,
            settings)


def init_app(app: Flask) -> None:
    """Attach the operator commands to the app (for `flask --app registry`)."""
    app.cli.commands.pop("openapi", None)  # flask-smorest's JSON-only variant
    for command in COMMANDS:
        app.cli.add_command(command)


def _make_app() -> Flask:
    from registry import create_app

    return create_app()


# The `registry` command: the operator's commands only. (Flask's own group would add --app,
# --debug, run, shell, routes and every extension's commands, none of them the operator's.)
# Each command that needs the app gets it through flask's ScriptInfo, as under `flask`.
main = click.Group(
    "registry", commands=list(COMMANDS),
    context_settings={"obj": ScriptInfo(create_app=_make_app, set_debug_flag=False)},
    help="Operator commands of the HER2+ MBC remission registry.")
