"""The upload page in a real browser (issue 17's proof): the same spreadsheet, with calendar dates
and local record ids, as .xlsx and as .csv, sent by `registry-submit` and by the page in
Chromium, gives byte-identical batches; the browser's traffic holds no calendar date, no local
record id, no identifier column's value and no site secret; a refused row is shown by row and
rule; sending shows progress; axe-core finds no serious violation; screenshots at 1366x768.

registry-submit runs in this process against the same gunicorn, for a site of its own (so both
tools find an empty site and get the same answers); its request bodies are taken from the
requests it prepares (the bytes it puts on the wire), the browser's from Playwright's request
events.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from openpyxl import load_workbook

from fake_redcap import site_values
from live import entrypoint_server, own_database
from redcap_support import source_records
from test_console_browser import (  # noqa: F401 - fixtures and helpers of the console's tests
    CHROMIUM, Console, browser, check_page, page, screenshot, sign_in,
)
from registry.core.redcap_dictionary import checkbox_column
from registry.core.template import template_xlsx
from registry.site.submit.cli import main as registry_submit

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

SECRET = "upload-proof-" + "k7" * 16
BATCH = 4  # records per batch on both sides: several batches, so the progress bar moves
PATIENTS = 9


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """gunicorn on a database of its own, taking at most BATCH records per batch."""
    folder = tmp_path_factory.mktemp("upload")
    with own_database("upload", folder) as url:
        log_path = folder / "server.log"
        with entrypoint_server(url, log_path, workers=2,
                               REGISTRY_MAX_BATCH=str(BATCH)) as base_url:
            yield Console(base_url, url, log_path)


def _patients() -> list[tuple[str, dict[str, Any], date]]:
    """(local record id, the registry record it must become, its day 0)."""
    return source_records(PATIENTS, seed=17, local_id=lambda number: f"HOSP-{731000 + number * 7}")


def _row(local_id: str, record: dict[str, Any], day_zero: date, dates: str
         ) -> dict[str, Any]:
    """One patient as a data manager types them into the template. `dates`: how dates are
    written (excel: real date cells; dmy: 03/04/2019; iso; serial: Excel day numbers)."""
    row: dict[str, Any] = {"record_id": local_id}
    for spec, value in site_values(record, day_zero):
        if spec.kind == "date":
            row[spec.name] = {"excel": lambda d: datetime.combine(d, datetime.min.time()),
                              "dmy": lambda d: d.strftime("%d/%m/%Y"),
                              "iso": lambda d: d.isoformat(),
                              "serial": lambda d: str((d - date(1899, 12, 30)).days),
                              }[dates](value)
        elif spec.kind == "codes":
            for code, _item in spec.codes:
                row[checkbox_column(spec.name, code)] = 1 if code in value else 0
        else:
            row[spec.name] = value
    return row


NAMES = ("Roe", "Doe", "Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin",
         "Lavoie", "Fortin")


def _rows(dates: str) -> list[dict[str, Any]]:
    """Every patient, one refused by a code (a typo), one by a rule, and a row without id;
    with a name and an MRN column the registry never reads."""
    rows = []
    for number, (local_id, record, day_zero) in enumerate(_patients()):
        row = _row(local_id, record, day_zero, dates)
        row["patient_name"] = f"{NAMES[number]}, Jane"
        row["mrn"] = f"MRN{880000 + number}"
        rows.append(row)
    rows[3]["sex"] = "femme"  # not a code: refused at the edge (invalid_choice)
    rows[5]["vital_status"] = "dead"  # without a cause of death: refused by the rules
    rows[5].pop("cause_of_death", None)
    rows.insert(7, {**rows[7], "record_id": ""})  # a row without a record id
    return rows


def write_xlsx(path: Path) -> Path:
    """The template filled in Excel: real date cells."""
    path.write_bytes(template_xlsx())
    workbook = load_workbook(path)
    sheet = workbook["records"]
    columns = {cell.value: cell.column for cell in sheet[1]}
    for extra in ("patient_name", "mrn"):
        columns[extra] = sheet.max_column + 1
        sheet.cell(row=1, column=columns[extra], value=extra)
    for number, row in enumerate(_rows("excel"), start=2):
        for name, value in row.items():
            sheet.cell(row=number, column=columns[name], value=value)
    workbook.save(path)
    return path


def write_csv(path: Path) -> Path:
    """The same patients as CSV, dates in the three forms a CSV holds them."""
    forms = ("dmy", "iso", "serial")
    rows = [dict(row, **{key: value for key, value in _rows(forms[number % 3])[number].items()
                         if key.endswith("_date")})
            for number, row in enumerate(_rows("iso"))]
    header = list(dict.fromkeys(name for row in rows for name in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_redcap_export(path: Path) -> Path:
    """The same patients as a longitudinal REDCap project's raw CSV export (a baseline event,
    repeating follow-up visits), with a name column the site added; the same three refusals."""
    from fake_redcap import FakeRedcap, site_rows

    fake = FakeRedcap(longitudinal=True)
    rows_of = {local_id: site_rows(record, day_zero, longitudinal=True)
               for local_id, record, day_zero in _patients()}
    for local_id, rows in rows_of.items():
        fake.save(local_id, rows)
    rows = fake.flat_rows(list(fake.records))
    ids = list(rows_of)
    for row in rows:
        row["patient_name"] = NAMES[ids.index(row["record_id"])] + ", Jane"
        if row["record_id"] == ids[3] and row["sex"]:
            row["sex"] = "femme"
        if row["record_id"] == ids[5] and row["vital_status"]:
            row["vital_status"], row["cause_of_death"] = "dead", ""
    rows.insert(1, {**rows[1], "record_id": ""})  # a row without a record id
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def forbidden_texts() -> list[str]:
    """What must never leave the site: every calendar date in every form the files use, every
    local record id, every identifier column's value, and the site secret."""
    found = [SECRET]
    for row in _rows("iso"):
        found += [row["record_id"], row["patient_name"], row["mrn"]] if row["record_id"] else []
        for name, value in row.items():
            if name.endswith("_date"):
                day = date.fromisoformat(value)
                found += [day.isoformat(), day.strftime("%d/%m/%Y"),
                          day.strftime("%Y/%m/%d"), day.strftime("%m/%d/%Y")]
    return [text for text in found if text]


def serials() -> set[str]:
    return {str((date.fromisoformat(value) - date(1899, 12, 30)).days)
            for row in _rows("iso") for name, value in row.items() if name.endswith("_date")}


class SubmitCapture:
    """registry-submit's batch request bodies, as it puts them on the wire."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.headers: list[dict[str, str]] = []
        original = requests.Session.send

        def send(session: requests.Session, prepared: requests.PreparedRequest,
                 **kwargs: Any) -> Any:
            if "/records/batch" in (prepared.url or ""):
                body = prepared.body if isinstance(prepared.body, bytes) else \
                    (prepared.body or "").encode()
                self.bodies.append((prepared.url.split("dry_run=")[1], body))
                self.headers.append(dict(prepared.headers))
            return original(session, prepared, **kwargs)

        monkeypatch.setattr(requests.Session, "send", send)


def run_registry_submit(console: Console, site: str, path: Path, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> tuple[SubmitCapture, dict[str, Any]]:
    """registry-submit on `path` for a fresh site; its batches and its report."""
    console.registry("sites", "add", site, "--name", f"{site} centre")
    monkeypatch.setenv("REGISTRY_URL", console.base_url)
    monkeypatch.setenv("REGISTRY_TOKEN", console.token("submitter", site))
    monkeypatch.setenv("REGISTRY_SITE_SECRET", SECRET)
    config = tmp_path / f"{site}.toml"
    config.write_text(f"push_batch_size = {BATCH}\nstate_dir = \"{tmp_path}\"\n")
    capture = SubmitCapture(monkeypatch)
    report_path = tmp_path / f"{site}-report.json"
    assert registry_submit(["--config", str(config), "--report", str(report_path),
                            str(path)]) == 1  # some records refused
    monkeypatch.undo()
    return capture, json.loads(report_path.read_text())


class BrowserCapture:
    """Every request the page makes: URL, headers and body (Playwright's request events)."""

    def __init__(self, page: Any) -> None:
        self.requests: list[Any] = []
        page.on("request", lambda request: self.requests.append(request))

    def batches(self) -> list[tuple[str, bytes]]:
        return [(request.url.split("dry_run=")[1], request.post_data_buffer)
                for request in self.requests if "/upload/batch" in request.url]

    def traffic(self) -> str:
        parts = []
        for request in self.requests:
            parts.append(request.url)
            parts.extend(f"{name}: {value}" for name, value in request.headers.items())
            body = request.post_data_buffer
            parts.append(body.decode("utf-8", errors="replace") if body else "")
        return "\n".join(parts)


def upload_in_browser(page: Any, console: Console, site: str, path: Path,
                      name: str | None) -> tuple[BrowserCapture, dict[str, Any]]:
    """A data manager of a fresh site uploads `path`: checks, reads the refusals, sends."""
    console.registry("sites", "add", site, "--name", f"{site} centre")
    sign_in(page, console, console.token("submitter", site), "/upload")
    capture = BrowserCapture(page)
    page.get_by_label(re.compile("^Spreadsheet")).set_input_files(str(path))
    page.get_by_label("Site secret", exact=True).fill(SECRET)
    page.get_by_role("button", name="Check the file (dry run)").click()
    page.locator("#dry-run-result").wait_for()
    refused = page.locator("#refused-table tbody tr")
    assert refused.count() >= 3
    if name:
        check_page(page, f"{name}-dry-run")
    with page.expect_download() as dry_report:
        page.locator("#report-download").click()
    assert json.loads(Path(dry_report.value.path()).read_text())["dry_run"] is True
    page.get_by_role("button", name=re.compile(r"^Send \d+ records? to the registry")).click()
    page.locator("#sent-result").wait_for()
    progress = page.locator("#upload-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max")
    assert "Sending" in page.locator("#upload-progress-text").inner_text()
    if name:
        check_page(page, f"{name}-sent")
    with page.expect_download() as report_info:
        page.locator("#report-download").click()
    # Nothing of the secret stays behind: no storage, and its field belongs to no form.
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.evaluate("document.getElementById('secret').form") is None
    return capture, json.loads(Path(report_info.value.path()).read_text())


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without what differs between runs by nature (times, file name, status)."""
    return {key: report[key] for key in ("counts", "records", "columns_dropped",
                                         "identifier_columns_dropped", "failure")}


WRITERS = {"xlsx": lambda folder: write_xlsx(folder / "cases.xlsx"),
           "csv": lambda folder: write_csv(folder / "cases.csv"),
           "redcap": lambda folder: write_redcap_export(folder / "redcap_export.csv")}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_page_and_registry_submit_send_byte_identical_batches(page, console, tmp_path,
                                                              monkeypatch, kind):
    path = WRITERS[kind](tmp_path)
    submitted, submit_report = run_registry_submit(console, f"S{kind.upper()}", path, tmp_path,
                                                   monkeypatch)
    browsed, page_report = upload_in_browser(page, console, f"B{kind.upper()}", path,
                                             f"upload-02-{kind}")

    # The same batches, byte for byte: dry runs, then the writes, in the same order.
    assert browsed.batches() == submitted.bodies
    phases = [phase for phase, _ in submitted.bodies]
    assert phases.count("true") >= 2 and phases.count("false") >= 2, phases
    records = [record for phase, body in submitted.bodies if phase == "false"
               for record in json.loads(body)["records"]]
    assert len(records) == PATIENTS - 2
    assert all(set(record["subject_id"]) <= set("abcdefghijklmnop") for record in records)
    assert {headers["X-Registry-Source"] for headers in submitted.headers} == {"spreadsheet"}
    assert {request.headers.get("x-registry-source") for request in browsed.requests
            if "/upload/batch" in request.url} == {"spreadsheet"}

    # The same report: rows, columns, rules and subject ids.
    assert _comparable(page_report) == _comparable(submit_report)
    refused = {(error["field"], error["code"])
               for line in page_report["records"] if line["outcome"] == "invalid"
               for error in line["errors"]}
    assert {("sex", "invalid_choice"), ("cause_of_death", "required"),
            ("record_id", "required")} <= refused

    # Nothing identifying left the browser.
    traffic = browsed.traffic()
    written = set(re.findall(r"\d{4}-\d{2}-\d{2}|\d{2}/\d{2}/\d{4}", path.read_text())) \
        if path.suffix == ".csv" else set()  # every date the file holds, visits included
    leaked = [text for text in [*forbidden_texts(), *written] if text in traffic]
    assert leaked == []
    assert not {serial for serial in serials() if re.search(rf"\b{serial}\b", traffic)}
    assert "femme" not in page.content()


def test_a_refused_row_is_shown_by_row_and_rule(page, console, tmp_path):
    path = write_csv(tmp_path / "cases.csv")
    console.registry("sites", "add", "BROWS", "--name", "rows centre")
    sign_in(page, console, console.token("submitter", "BROWS"), "/upload")
    assert page.get_by_role("navigation", name="Pages").get_by_role(
        "link", name="Upload a spreadsheet").get_attribute("aria-current") == "page"
    check_page(page, "upload-01-empty")
    with page.expect_download() as template:  # the template, without a token to paste
        page.get_by_role("link", name=re.compile("Download the empty template")).click()
    workbook = load_workbook(io.BytesIO(Path(template.value.path()).read_bytes()))
    assert workbook.sheetnames[:2] == ["records", "fields"]
    page.get_by_label(re.compile("^Spreadsheet")).set_input_files(str(path))
    page.get_by_role("button", name="Check the file (dry run)").click()
    assert "at least 32 characters" in page.get_by_role("alert").inner_text()
    page.get_by_label("Site secret", exact=True).fill(SECRET)
    page.get_by_role("button", name="Check the file (dry run)").click()
    page.locator("#dry-run-result").wait_for()
    rows = {tuple(cell.strip() for cell in row.split("\t")[:3])
            for row in page.locator("#refused-table tbody tr").all_inner_texts()}
    assert ("5", "sex", "invalid_choice") in rows
    assert ("7", "cause_of_death", "required") in rows
    assert ("9", "record_id", "required") in rows
    assert page.locator("#dry-created").inner_text() == str(PATIENTS - 2)
    assert "2 named like identifiers" in page.locator("#dry-dropped").inner_text()
    screenshot(page, "upload-03-refused-rows")

    # A file that is not a spreadsheet of the registry: said plainly, nothing sent.
    other = tmp_path / "notes.csv"
    other.write_text("name,comment\nRoe,x\n")
    page.get_by_label(re.compile("^Spreadsheet")).set_input_files(str(other))
    page.get_by_role("button", name="Check the file (dry run)").click()
    page.get_by_role("alert").get_by_text("has no record_id column").wait_for()
    screenshot(page, "upload-04-wrong-file")


def test_a_coordinator_cannot_open_the_upload_page(page, console):
    sign_in(page, console, console.token("coordinator"))
    assert page.get_by_role("link", name="Upload a spreadsheet").count() == 0
    assert page.goto(f"{console.base_url}/upload").status == 403
