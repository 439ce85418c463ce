"""The site tools installed alone, end to end: a fresh virtual environment gets the base package
(no server packages), then its registry-redcap-sync and registry-submit send a longitudinal
REDCap project, its raw CSV export and a filled template to a live registry on loopback.

What must hold (issue 14, "Done when"): every valid patient arrives with the subject id the sync
gives it; no calendar date, local record id or identifier column reaches the registry (its
database and the captured traffic); invalid rows are reported by row, field and rule, never by
value; a second run writes nothing.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from registry.core.deidentify import subject_id
from registry.core.redcap_dictionary import checkbox_column
from registry.db import Base, unit_of_work
from registry.models import Record, RecordVersion, Site
from registry.services.intake.record_rows import record_from_row
from tests.fake_redcap import FakeRedcap, ServerThread, site_values
from tests.redcap_support import load_project, new_site, registry_server, source_records

ROOT = Path(__file__).resolve().parents[1]
SERVER_DISTRIBUTIONS = {"flask", "flask-smorest", "sqlalchemy", "alembic", "psycopg",
                        "psycopg-binary", "gunicorn", "scipy", "numpy", "werkzeug"}
DATE_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}")
SECRET = "site-secret-" + "7" * 32
IDENTIFIER_VALUE = "Roe-Janexq"  # the value of an identifier column the site keeps


@pytest.fixture(scope="module")
def site_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the base package installed as a site installs it: the
    wheel `make site-tools` builds from this source tree (docs/site-tools.md)."""
    venv = tmp_path_factory.mktemp("site") / "venv"
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "--wheel-dir", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
               "--disable-pip-version-check", str(next(wheels.glob("*.whl")))]
    if os.environ.get("REGISTRY_WHEELHOUSE"):  # offline CI: wheels prepared beforehand
        install[4:4] = ["--no-index", "--find-links", os.environ["REGISTRY_WHEELHOUSE"]]
    result = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry served on loopback with its own database (and a capture of its traffic)."""
    with registry_server(tmp_path_factory.mktemp("registry")) as served:
        yield served


def _run(venv: Path, command: str, *args: str, env: dict[str, str], cwd: Path
         ) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / command), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _site_env(venv: Path, state: Path, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("REGISTRY_", "REDCAP_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "REGISTRY_SITE_SECRET": SECRET, "REGISTRY_SYNC_STATE_DIR": str(state),
            **settings}


def test_site_tools_install_without_the_server(site_venv, tmp_path):
    listed = subprocess.run([str(site_venv / "bin" / "python"), "-m", "pip", "list",
                             "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    installed = {package["name"].lower() for package in json.loads(listed)}
    assert {"her2-remission-registry", "marshmallow", "pycap", "openpyxl"} <= installed
    assert not installed & SERVER_DISTRIBUTIONS, sorted(installed & SERVER_DISTRIBUTIONS)
    env = _site_env(site_venv, tmp_path)
    for command in ("registry-redcap-sync", "registry-submit"):
        assert _run(site_venv, command, "--help", env=env, cwd=tmp_path).returncode == 0


def _export_csv(fake: FakeRedcap, path: Path, change: dict[str, dict[str, str]]) -> None:
    """The project as REDCap's raw CSV export, with a column the site added for itself;
    `change` edits the first row of some records (record id -> column -> value)."""
    rows = fake.flat_rows(list(fake.records))
    seen: set[str] = set()
    for row in rows:
        row["patient_name"] = IDENTIFIER_VALUE
        if row["record_id"] in change and row["record_id"] not in seen:
            row.update(change[row["record_id"]])
        seen.add(row["record_id"])
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _fill_template(path: Path, patients: list[tuple[str, dict[str, Any], date]],
                   text_dates: bool) -> None:
    """Type patients into the template: dates as Excel dates, or as day/month/year text."""
    workbook = load_workbook(path)
    sheet = workbook["records"]
    columns = {cell.value: cell.column for cell in sheet[1]}
    for row, (local_id, record, day_zero) in enumerate(patients, start=2):
        sheet.cell(row=row, column=columns["record_id"], value=local_id)
        for spec, value in site_values(record, day_zero):
            if spec.kind == "date":
                written = value.strftime("%d/%m/%Y") if text_dates else \
                    datetime.combine(value, datetime.min.time())
                sheet.cell(row=row, column=columns[spec.name], value=written)
            elif spec.kind == "codes":
                for code, _item in spec.codes:
                    sheet.cell(row=row, column=columns[checkbox_column(spec.name, code)],
                               value=1 if code in value else 0)
            else:
                sheet.cell(row=row, column=columns[spec.name], value=value)
    workbook.save(path)


class Registry:
    """What the registry holds for one site."""

    def __init__(self, app: Any, code: str) -> None:
        self.app, self.code = app, code

    def records(self) -> dict[str, dict[str, Any]]:
        with self.app.app_context(), unit_of_work() as session:
            rows = session.scalars(select(Record).join(Site, Site.id == Record.site_id)
                                   .where(Site.code == self.code))
            return {row.subject_id: record_from_row(row) for row in rows}

    def versions(self) -> list[tuple[str, Any]]:
        with self.app.app_context(), unit_of_work() as session:
            return [tuple(row) for row in session.execute(
                select(Record.subject_id, RecordVersion.data)
                .join(Record, Record.id == RecordVersion.record_id)
                .join(Site, Site.id == Record.site_id).where(Site.code == self.code))]

    def every_value(self) -> str:
        """Every value of every table of the registry (times of its own aside), as text."""
        with self.app.app_context(), unit_of_work() as session:
            return "\n".join(json.dumps(value, default=str)
                             for table in Base.metadata.sorted_tables
                             for row in session.execute(select(table)) for value in row
                             if not isinstance(value, (date, datetime)))

    def version_count(self) -> int:
        with self.app.app_context(), unit_of_work() as session:
            return session.scalar(select(func.count()).select_from(RecordVersion).join(
                Record, Record.id == RecordVersion.record_id).join(
                Site, Site.id == Record.site_id).where(Site.code == self.code))


def _errors(report: dict[str, Any]) -> set[tuple[tuple[int, ...], str, str]]:
    return {(tuple(line["rows"]), error["field"], error["code"])
            for line in report["records"] if line["outcome"] == "invalid"
            for error in line["errors"]}


def test_sync_and_submit_from_the_site_venv_reach_the_registry_de_identified(
        site_venv, registry, tmp_path):
    app, capture, url = registry
    token = new_site(app, "SUBM")
    held = Registry(app, "SUBM")
    patients = source_records(10, seed=1414)
    fake = FakeRedcap(longitudinal=True)
    load_project(fake, patients)
    export = tmp_path / "redcap_export.csv"
    bad_her2, bad_date = patients[7][0], patients[8][0]
    _export_csv(fake, export, {bad_her2: {"her2_ihc": "1plus", "her2_ish": "not_amplified"},
                               bad_date: {"met_dx_date": "2019-02-30"}})
    synced = [record_id for record_id, _, _ in patients[:5]]
    for record_id, _, _ in patients[5:]:
        fake.delete(record_id)  # the sync sees the first five; the export holds all ten
    env = _site_env(site_venv, tmp_path / "state", REGISTRY_URL=url, REGISTRY_TOKEN=token)
    capture.captured.clear()

    # 1. registry-redcap-sync, installed alone, works as before.
    with ServerThread(fake) as redcap:
        sync_env = {**env, "REDCAP_API_URL": redcap.url + "/api/",
                    "REDCAP_API_TOKEN": fake.token}
        sync = _run(site_venv, "registry-redcap-sync", env=sync_env, cwd=tmp_path)
    assert sync.returncode == 0, sync.stderr
    assert set(held.records()) == {subject_id(SECRET, record_id) for record_id in synced}
    versions = held.version_count()

    # 2. registry-submit of the project's CSV export: the synced patients are recognised
    # (same subject ids, so unchanged), the others are created, two are refused by row.
    report_path = tmp_path / "export-report.json"
    sent = _run(site_venv, "registry-submit", str(export), "--report", str(report_path),
                env=env, cwd=tmp_path)
    assert sent.returncode == 1, sent.stderr  # records refused
    report = json.loads(report_path.read_text())
    assert report["counts"] == {"created": 3, "updated": 0, "unchanged": 5, "invalid": 2,
                                "rows": 30, "records": 10}
    assert report["columns_dropped"] >= 1 and report["identifier_columns_dropped"] == 1
    rows_of = {record_id: [2 + 3 * index + offset for offset in range(3)]
               for index, (record_id, _, _) in enumerate(patients)}
    assert _errors(report) == {(tuple(rows_of[bad_her2]), "her2_ihc", "not_her2_positive"),
                               (tuple(rows_of[bad_date]), "met_dx_date", "malformed_date")}
    valid = [record_id for record_id, _, _ in patients if record_id not in (bad_her2, bad_date)]
    assert set(held.records()) == {subject_id(SECRET, record_id) for record_id in valid}
    assert held.version_count() == versions + 3
    rows = ", ".join(map(str, rows_of[bad_her2]))
    assert f"row {rows}: her2_ihc: not_her2_positive" in sent.stderr

    # 3. The registry's template, filled with Excel dates and with typed day/month/year text.
    template = tmp_path / "template.xlsx"
    assert _run(site_venv, "registry-submit", "template", str(template), env=env,
                cwd=tmp_path).returncode == 0
    typed = [(f"TPLX{number:03d}", record, day_zero)
             for number, (_, record, day_zero) in enumerate(source_records(4, seed=99))]
    typed[3][1]["age_at_met_dx"] = 95  # must be sent as 90: refused, by row and rule
    _fill_template(template, typed[:2], text_dates=False)
    filled_text = tmp_path / "template_text_dates.xlsx"
    assert _run(site_venv, "registry-submit", "template", str(filled_text), env=env,
                cwd=tmp_path).returncode == 0
    _fill_template(filled_text, typed[2:], text_dates=True)
    dry = _run(site_venv, "registry-submit", str(template), "--dry-run", "--report",
               str(tmp_path / "dry.json"), env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads((tmp_path / "dry.json").read_text())["counts"]["created"] == 2
    assert held.version_count() == versions + 3  # a dry run writes nothing
    for path, name in ((template, "excel.json"), (filled_text, "text.json")):
        result = _run(site_venv, "registry-submit", str(path), "--report",
                      str(tmp_path / name), env=env, cwd=tmp_path)
        assert result.returncode in (0, 1), result.stderr
    excel, text = (json.loads((tmp_path / name).read_text()) for name in ("excel.json",
                                                                             "text.json"))
    assert excel["counts"]["created"] == 2 and excel["exit_code"] == 0
    assert text["counts"]["created"] == 1 and text["exit_code"] == 1
    assert _errors(text) == {((3,), "age_at_met_dx", "age_not_top_coded")}
    stored = held.records()
    for local_id, record, _ in typed[:3]:
        assert stored[subject_id(SECRET, local_id)]["last_followup_day"] == \
            record["last_followup_day"]

    # 4. A second run writes nothing.
    versions = held.version_count()
    for path in (export, template, filled_text):
        again = _run(site_venv, "registry-submit", str(path), "--report",
                     str(tmp_path / "again.json"), env=env, cwd=tmp_path)
        counts = json.loads((tmp_path / "again.json").read_text())["counts"]
        assert counts["created"] == counts["updated"] == 0, again.stderr
    assert held.version_count() == versions

    # Nothing identifying reached the registry: its traffic and its database.
    traffic = "\n".join(capture.captured)
    assert "records/batch" in traffic
    assert not DATE_SHAPE.search(traffic)
    for local in ("pt0", "TPLX", IDENTIFIER_VALUE, "record_id", "patient_name", "_date"):
        assert local not in traffic, local
    everything = held.every_value()
    assert "last_followup_day" in everything  # the versions' data are read
    assert not DATE_SHAPE.search(everything)
    for local in ("pt0", "TPLX", IDENTIFIER_VALUE, "patient_name"):
        assert local not in everything, local
    for subject, data in held.versions():
        assert re.fullmatch(r"[a-p]{32}", subject)
        stored_text = json.dumps(data)
        assert not DATE_SHAPE.search(stored_text)
        assert not any(local in stored_text for local in ("pt0", "TPLX", IDENTIFIER_VALUE))
    # ... and the reports name rows, fields and rules, never a value or a local id.
    for name in ("export-report.json", "excel.json", "text.json"):
        body = (tmp_path / name).read_text()
        for local in ("pt0", "TPLX", IDENTIFIER_VALUE, "2019-02-30"):
            assert local not in body
