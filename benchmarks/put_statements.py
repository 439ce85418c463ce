"""B3's baseline: a pgbench script of the very statements a `PUT /records/{id}` sends.

A PUT of a stored record sends, on PostgreSQL: the token lookup (one autocommit statement),
BEGIN, the row lock (SELECT ... FOR UPDATE), one statement writing the record, its version and
its audit entry, and COMMIT. This module compiles the registry's own statement objects (the
same objects the services execute) with the psycopg dialect and turns their parameters into
pgbench variables, so the script cannot drift from what a PUT sends;
tests/test_bench_statements.py captures the statements of a real PUT and compares.

pgbench runs the script in prepared mode, as psycopg does after a statement's fifth execution
on a connection. pgbench cannot build text, so one statement is added that the PUT does not send:
after the row lock, it builds the row's JSON with the next version number and the transaction's
time (the Python of a PUT does that), and names the subject of this transaction and that of the
client's next. It makes the baseline slightly slower than the PUT's own statements, which
favours the PUT in the ratio. Each transaction writes its own time, as each PUT does: the
indexed updated_at then changes, and PostgreSQL updates the row's indexes as for a PUT.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

# The pgbench variables that change per transaction; every other parameter is a constant (-D).
# A placeholder of a compiled statement -> the pgbench variable that holds its value.
_VARIABLE_PARAMETERS = {
    "lock": {"subject_id": "subject_next"},
    # p_*: the columns of the locked row (\gset p_); row, now, subject_now: by the helper
    # statement.
    "write": {"record_id": "p_id", "number": "next_version", "subject": "subject_now",
              "row": "row", "now": "now"},
}
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def put_statements() -> dict[str, Any]:
    """The statement objects a PUT of a stored record executes, in order, by name."""
    from registry.services.access.tokens import _TOKEN_BY_PUBLIC_ID
    from registry.services.intake.writes import _ONE_STORED_FOR_UPDATE, _UPDATE_ONE

    return {"token": _TOKEN_BY_PUBLIC_ID, "lock": _ONE_STORED_FOR_UPDATE, "write": _UPDATE_ONE}


def compiled_sql(statement: Any) -> str:
    """A statement as psycopg receives it from SQLAlchemy (pyformat placeholders)."""
    return str(statement.compile(dialect=psycopg_dialect()))


def _as_text(value: Any) -> str:
    """A parameter's value as pgbench sends it (text, typed by the statement's casts)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_pgbench(sql: str, variables: dict[str, str]) -> tuple[str, set[str]]:
    """A compiled statement with pgbench variables for its placeholders: `variables` names the
    variable of a placeholder, others keep their own name; returns (script line, the
    placeholders that are left as constants)."""
    constants: set[str] = set()

    def variable(match: re.Match) -> str:
        name = match.group(1)
        if name not in variables:
            constants.add(name)
        return ":" + variables.get(name, name)

    text = _PLACEHOLDER.sub(variable, sql).replace("%%", "%")
    if ";" in text:
        raise ValueError("a statement holds a semicolon, which would end it in pgbench")
    return text + ";", constants


def pgbench_script(*, public_id: str, site_id: int, token_id: int, record: dict[str, Any],
                   changed_fields: list[str], subject_prefix: str, first_subject: int,
                   subjects_per_client: int, now: datetime, source: str = "api"
                   ) -> tuple[str, dict[str, str]]:
    """The pgbench script of a PUT that updates `record`, and its constants (pgbench -D).

    Client c updates subjects `subject_prefix` + (first_subject + c * subjects_per_client + k),
    k random below subjects_per_client, so no two clients wait for each other's row lock."""
    from registry.services.access.tokens import Caller
    from registry.services.intake.writes import PlannedWrite, one_write

    statements = put_statements()
    # The stored row's id and version are read by the row lock (pgbench: \gset p_).
    stored = SimpleNamespace(id=0, version=1)
    plan = PlannedWrite(0, f"{subject_prefix}{first_subject}", "updated", record,
                        existing=stored, changes={name: {} for name in changed_fields}, version=2)
    caller = Caller(token_id=token_id, role="submitter", site_id=site_id)
    write, write_values = one_write(caller, plan, source, now)
    if write is not statements["write"]:
        raise AssertionError("a PUT of a stored record no longer writes with _UPDATE_ONE")
    values = {**{name: value for name, value in write_values.items()
                 if name not in _VARIABLE_PARAMETERS["write"]},
              "public_id": public_id, "site_id": site_id,
              "row_base": write_values["row"],
              "subject_next": f"{subject_prefix}{first_subject}"}
    token, token_constants = to_pgbench(compiled_sql(statements["token"]), {})
    lock, lock_constants = to_pgbench(compiled_sql(statements["lock"]),
                                      _VARIABLE_PARAMETERS["lock"])
    write_line, write_constants = to_pgbench(compiled_sql(write), _VARIABLE_PARAMETERS["write"])
    # Not sent by a PUT: the row's JSON with the next version and this transaction's time,
    # that time (ISO 8601, as a PUT sends it), this transaction's subject (which the row lock
    # names but does not return), and the next transaction's. Each transaction has a time of
    # its own, as each PUT has: with one time for all, updated_at (indexed) would never change
    # and PostgreSQL would update the row in place without touching its indexes (a HOT update),
    # work a PUT cannot skip.
    helper = ("SELECT CAST(jsonb_set(jsonb_set(CAST(:row_base AS jsonb), '{version}', "
              "to_jsonb(CAST(:next_version AS integer))), '{updated_at}', to_jsonb(now())) "
              "AS text) AS row, to_jsonb(now()) #>> '{}' AS now, "
              "CAST(:subject_next AS text) AS subject_now, "
              f"'{subject_prefix}' || CAST(:next_subject AS integer) AS subject_next;")
    script = "\n".join([
        f"\\set next_subject {first_subject} + :client_id * {subjects_per_client} "
        f"+ random(0, {subjects_per_client - 1})",
        token,
        "BEGIN;",
        lock,
        "\\gset p_",
        "\\set next_version :p_version + 1",
        helper,
        "\\gset",
        write_line,
        "COMMIT;",
        "",
    ])
    needed = token_constants | lock_constants | write_constants | {"row_base", "subject_next"}
    missing = needed - set(values)
    if missing:
        raise AssertionError(f"no value for the parameters {sorted(missing)}")
    return script, {name: _as_text(values[name]) for name in sorted(needed)}
