"""The data managers' pages in a real browser: Playwright driving the machine's Chromium against
gunicorn (deploy/entrypoint.sh) on a database of its own, holding two sites whose records are
known: sign-in as a submitter, My site on that data (counts, completeness percentages and the
follow-up-due list as the data imply), the site boundary (site B's numbers and records never
shown to site A, a guessed URL of a site B record answering 404), roles, a record's history after
two updates, and a withdrawal through its confirmation. Every page is checked with axe-core and
photographed at 1366x768 into screenshots/ (site-*.png)."""

from __future__ import annotations

import copy
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from conftest import EXAMPLE_RECORD
from live import entrypoint_server, own_database
from registry.db import make_engine, utcnow
from registry.models import Record, RecordVersion
from test_console_browser import (  # noqa: F401  (browser and page are fixtures)
    CHROMIUM, Console, browser, check_page, follow, page, screenshot, sign_in,
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                                         "(.ci/run installs it)")

SITE_A, SITE_B = "ALPHA", "BETA"
# Site A's records: which optional fields each leaves blank, and how many days ago it was last
# updated (None: today). The expected numbers of the page are computed from this table.
A_RECORDS: dict[str, tuple[dict[str, Any], int | None]] = {
    "ALPHA-kqzvhdmwtrpxbnel": ({}, None),
    "ALPHA-mfjtrwqpzkdlhvcx": ({"ecog_at_met_dx": None, "histology": None}, 600),
    "ALPHA-wvbnqtrpxklmzdhs": ({"ecog_at_met_dx": None, "lvef_baseline_pct": None,
                                "lvef_nadir_pct": None}, None),
    "ALPHA-pzrtkvmqnbwhxlcd": ({"response_assessment": None}, 400),
    "ALPHA-hvxqkzmtrplwbnfd": ({"her2_tested_on": None, "histology": None}, 200),
}
A_WITHDRAWN = "ALPHA-tnrkqpzwmvxhbdlc"
B_RECORDS = ("BETA-qhzvnmtrkpxwldbc", "BETA-xkvtmrzqphwnbldf", "BETA-zrmqvktnphxwbdlc")
FOLLOW_UP_DAYS = 365  # the setting's default


def record(subject: str, **changes: Any) -> dict[str, Any]:
    """The example record of record.md under another pseudonym, with some fields changed."""
    body = copy.deepcopy(EXAMPLE_RECORD)
    body.update(subject_id=subject, **changes)
    return body


class SiteConsole(Console):
    """The console with the sites' records written through the API."""

    def send(self, method: str, token: str, body: dict[str, Any] | None = None,
             path: str = "", source: str = "api") -> int:
        """A write to the API as a site would send it; the status."""
        data = None
        if body is not None:
            body = dict(body)
            path = f"/api/v1/records/{body.pop('subject_id')}"
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                     "X-Registry-Source": source})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as refused:
            refused.close()
            return refused.code

    def backdate(self, subject: str, days: int) -> None:
        """Make a record (of one version) look received and last updated `days` ago: time
        passing, without waiting."""
        when = utcnow() - timedelta(days=days)
        engine = make_engine(self.database_url)
        with engine.begin() as connection:
            connection.execute(update(Record.__table__).where(Record.subject_id == subject)
                               .values(created_at=when, updated_at=when))
            connection.execute(update(RecordVersion.__table__).where(
                RecordVersion.record_id == Record.id, Record.subject_id == subject)
                .values(created_at=when))
        engine.dispose()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteConsole]:
    """gunicorn serving the registry on loopback, with sites A and B and their known records."""
    folder = tmp_path_factory.mktemp("site-console")
    with own_database("siteconsole", folder) as url:
        with entrypoint_server(url, folder / "server.log", workers=2) as base_url:
            served = SiteConsole(base_url, url, folder / "server.log")
            served.registry("sites", "add", SITE_A, "--name", "Alpha Cancer Centre")
            served.registry("sites", "add", SITE_B, "--name", "Beta University Hospital")
            served.site_a = served.token("submitter", SITE_A)
            served.site_b = served.token("submitter", SITE_B)
            written = [served.send("PUT", served.site_a, record(subject, **blanks),
                                   source="redcap-sync" if "histology" in blanks else "api")
                       for subject, (blanks, _) in A_RECORDS.items()]
            written.append(served.send("PUT", served.site_a, record(A_WITHDRAWN)))
            written.append(served.send(
                "DELETE", served.site_a,
                path=f"/api/v1/records/{A_WITHDRAWN}?reason=consent_withdrawn"))
            written += [served.send("PUT", served.site_b, record(subject, ecog_at_met_dx=None))
                        for subject in B_RECORDS]
            assert written == [201] * (len(A_RECORDS) + 1) + [204] + [201] * len(B_RECORDS)
            for subject, (_, days) in A_RECORDS.items():
                if days:
                    served.backdate(subject, days)
            yield served


def expected_share(field: str) -> str:
    """The share of site A's records giving `field`, from the table above."""
    given = sum(1 for blanks, _ in A_RECORDS.values() if field not in blanks)
    return f"{round(100 * given / len(A_RECORDS))}%"


def test_a_submitter_reads_my_site_on_known_data(page, console):
    sign_in(page, console, console.site_a)
    check_page(page, "site-01-home-submitter")
    follow(page, page.get_by_role("navigation", name="Pages").get_by_role("link",
                                                                      name="My site"))
    assert page.locator("#record-count").inner_text() == str(len(A_RECORDS))
    due = {subject: days for subject, (_, days) in A_RECORDS.items()
           if days and days > FOLLOW_UP_DAYS}
    assert page.locator("#due-count").inner_text() == str(len(due))
    rows = page.locator("table#follow-up-due tbody tr")
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == \
        sorted(due, key=lambda subject: -due[subject])
    assert page.locator("#withdrawn-count").inner_text() == "1"
    assert A_WITHDRAWN in page.locator("#withdrawals-table").inner_text()
    assert "Consent withdrawn" in page.locator("#withdrawals-table").inner_text()
    sources = page.locator("table#sources").inner_text()
    assert re.search(r"REDCap sync\s+2", sources) and re.search(r"API\s+3", sources)
    for field in ("ecog_at_met_dx", "histology", "lvef_baseline_pct", "her2_tested_on",
                  "response_assessment"):
        cell = page.locator(f"table#completeness tr[data-field={field}] td.share")
        assert cell.inner_text() == expected_share(field), field
    chart = page.locator("#completeness-figure svg[role=img]")
    chart.wait_for()
    assert chart.locator("rect").count() >= 5
    # Nothing of site B: no pseudonym, and B's counts are not in A's.
    assert "BETA-" not in page.content()
    check_page(page, "site-02-my-site")

    # The period is changed on the page: over 300 days, the record of 400 days is due too.
    page.get_by_label("Due when not updated for more than (days)").fill("300")
    follow(page, page.get_by_role("button", name="Show records due"))
    assert page.locator("#due-count").inner_text() == str(
        sum(1 for _, days in A_RECORDS.values() if days and days > 300))
    assert "usual period is 365 days" in page.locator("#due-summary").inner_text()


def test_a_submitter_never_sees_another_sites_records(page, console):
    sign_in(page, console, console.site_a, "/site/records")
    listing = page.locator("table#records")
    assert listing.locator("tbody tr").count() == len(A_RECORDS)
    assert "BETA-" not in page.content()
    check_page(page, "site-03-records")
    page.get_by_label("Pseudonym contains").fill("BETA")
    follow(page, page.get_by_role("button", name="Show"))
    assert "0 records whose pseudonym contains" in page.locator("#records-found").inner_text()
    # A guessed address of site B's record answers exactly as a record that does not exist.
    theirs = page.goto(f"{console.base_url}/site/records/{B_RECORDS[0]}")
    assert theirs.status == 404
    assert page.get_by_role("heading", name="No such record").is_visible()
    theirs_text = page.locator("main").inner_text()
    check_page(page, "site-04-record-not-found")
    missing = page.goto(f"{console.base_url}/site/records/ALPHA-nonexistentrecord")
    assert missing.status == 404 and page.locator("main").inner_text() == theirs_text
    assert page.goto(f"{console.base_url}/site/records/{B_RECORDS[0]}/withdraw").status == 404
    # Site B, signed in, sees its own three records and nothing of A.
    page.context.clear_cookies()
    sign_in(page, console, console.site_b, "/site")
    assert page.locator("#record-count").inner_text() == str(len(B_RECORDS))
    assert page.locator("#withdrawn-count").inner_text() == "0"
    assert "ALPHA-" not in page.content()


def test_coordinators_and_submitters_keep_to_their_own_pages(page, console):
    sign_in(page, console, console.token("coordinator"))
    assert page.get_by_role("link", name="My site").count() == 0
    for path in ("/site", "/site/records", f"/site/records/{next(iter(A_RECORDS))}"):
        answer = page.goto(f"{console.base_url}{path}")
        assert answer.status == 403 and "ALPHA-" not in page.content(), path
        assert page.get_by_role("heading", name="Not for your role").is_visible()
    page.context.clear_cookies()
    sign_in(page, console, console.site_a)
    assert page.get_by_role("link", name="Tables").count() == 0
    for path in ("/tables", "/releases", "/log"):
        assert page.goto(f"{console.base_url}{path}").status == 403, path


def test_a_records_history_after_two_updates(page, console):
    subject = "ALPHA-kqzvhdmwtrpxbnel"
    assert console.send("PUT", console.site_a, record(subject, last_followup_day=3650),
                        source="redcap-sync") == 200
    assert console.send("PUT", console.site_a, record(subject, last_followup_day=3800,
                                                      disease_status_last="progressing",
                                                      progression_day=3700)) == 200
    sign_in(page, console, console.site_a, f"/site/records?q={subject[6:12]}")
    follow(page, page.get_by_role("link", name=subject))
    assert "Version 3" in page.locator("#record-summary").inner_text()
    versions = page.locator("ol#history > li")
    assert [versions.nth(i).get_attribute("data-version") for i in range(3)] == ["3", "2", "1"]
    newest, middle = versions.nth(0), versions.nth(1)
    assert "from API" in newest.inner_text() and "3 fields changed" in newest.inner_text()
    assert [row.get_attribute("data-field") for row in newest.locator("tbody tr").all()] == [
        "progression_day", "disease_status_last", "last_followup_day"]
    assert "from REDCap sync" in middle.inner_text() and "1 field changed" in middle.inner_text()
    assert "day 3300" in middle.inner_text() and "day 3650" in middle.inner_text()
    values = page.locator("table#values")
    assert "Disease status at the last follow-up" in values.inner_text()
    assert "progressing" in values.locator("tr[data-field=disease_status_last]").inner_text()
    assert page.locator("table#derived tr[data-field=hr_status] td").inner_text() == "positive"
    check_page(page, "site-05-record-history")


def test_a_withdrawal_through_its_confirmation(page, console):
    subject = "ALPHA-wvbnqtrpxklmzdhs"
    sign_in(page, console, console.site_a, f"/site/records/{subject}")
    follow(page, page.get_by_role("link", name="Withdraw this record"))
    assert page.get_by_role("heading", name="This cannot be undone").is_visible()
    check_page(page, "site-06-withdraw-confirm")
    button = page.get_by_role("button", name=f"Withdraw {subject} permanently")
    button.click()  # no reason chosen: the browser keeps the form (the reason is required)
    assert "/withdraw" in page.url
    page.get_by_label("Entered in error").check()
    follow(page, button)
    assert page.url == f"{console.base_url}/site"
    assert page.get_by_role("status").is_visible()  # in sight: the page opens at its top
    assert "The record was withdrawn (entered in error)" in \
        page.get_by_role("status").inner_text()
    newest = page.locator("#withdrawals-table tbody tr").first.inner_text()
    assert subject in newest and "Entered in error" in newest
    assert page.locator("#record-count").inner_text() == str(len(A_RECORDS) - 1)
    check_page(page, "site-07-after-withdrawal")
    gone = page.goto(f"{console.base_url}/site/records/{subject}")
    assert gone.status == 410 and "was withdrawn" in page.locator("main").inner_text()
    # The API's DELETE and this page are one service: the subject is refused there now.
    assert console.send("PUT", console.site_a, record(subject)) == 409
    # Request logs name the route, never a pseudonym of the pages' addresses or searches.
    assert "ALPHA-" not in console.log_path.read_text()
