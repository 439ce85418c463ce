"""The data managers' pages through Flask's test client (both databases): My site on known data
(counts, last-update sources, follow-up due, completeness, withdrawals), the records list, one
record's history, withdrawal behind a confirmation, and the site boundary (another site's record
is a 404, coordinators and submitters keep to their own pages). In a real browser:
test_console_browser.py."""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from registry.core.vocabulary import SOURCES
from registry.db import transaction, utcnow
from registry.models import AuditEntry, Record, RecordVersion, Tombstone
from registry.services.intake.site_overview import completeness_fields, site_summary
from registry.services.access.tokens import Caller, issue_token, resolve_token
from test_console import csrf_token, sign_in

SOURCE = "X-Registry-Source"


def put(client, token: str, record: dict[str, Any], source: str = "api") -> None:  # noqa: ANN001
    """PUT a record through the API as the token's site."""
    body = dict(record)
    subject = body.pop("subject_id")
    answer = client.put(f"/api/v1/records/{subject}", json=body,
                        headers={"Authorization": f"Bearer {token}", SOURCE: source})
    assert answer.status_code in (200, 201), answer.get_json()


def variant(example: dict[str, Any], subject: str, **changes: Any) -> dict[str, Any]:
    """The example record under another pseudonym, with some fields changed."""
    record = copy.deepcopy(example)
    record.update(subject_id=subject, **changes)
    return record


def backdate(subject: str, days: int) -> None:
    """Make a record (of one version) look received and last updated `days` ago."""
    when = utcnow() - timedelta(days=days)
    with transaction() as connection:
        connection.execute(update(Record.__table__).where(Record.subject_id == subject)
                           .values(created_at=when, updated_at=when))
        connection.execute(update(RecordVersion.__table__).where(
            RecordVersion.record_id == Record.id, Record.subject_id == subject)
            .values(created_at=when))


@pytest.fixture()
def known_site(app, client, make_site, example_record):  # noqa: ANN001, ANN201
    """Site TOR with four records of known completeness, two of them stale, one withdrawn
    earlier, and site MTL with records of its own that TOR must never see."""
    make_site("TOR")
    make_site("MTL")
    tor = issue_token("submitter", "TOR")[1]
    mtl = issue_token("submitter", "MTL")[1]
    # The example gives every optional field; the others leave out some.
    put(client, tor, variant(example_record, "TOR-aaaaaaaaaaaaaaaa"))
    put(client, tor, variant(example_record, "TOR-bbbbbbbbbbbbbbbb", ecog_at_met_dx=None,
                             histology=None), source="redcap-sync")
    put(client, tor, variant(example_record, "TOR-cccccccccccccccc", ecog_at_met_dx=None,
                             lvef_baseline_pct=None, lvef_nadir_pct=None))
    put(client, tor, variant(example_record, "TOR-dddddddddddddddd", histology=None))
    put(client, tor, variant(example_record, "TOR-eeeeeeeeeeeeeeee"))
    client.delete("/api/v1/records/TOR-eeeeeeeeeeeeeeee?reason=entered_in_error",
                  headers={"Authorization": f"Bearer {tor}"})
    backdate("TOR-cccccccccccccccc", 500)
    backdate("TOR-bbbbbbbbbbbbbbbb", 400)
    for letter in "mnop":
        put(client, mtl, variant(example_record, f"MTL-{letter * 16}", ecog_at_met_dx=None))
    return {"tor": tor, "mtl": mtl}


def caller_of(token: str) -> Caller:
    return resolve_token(token)


def test_the_summary_counts_only_the_callers_site(known_site):
    summary = site_summary(caller_of(known_site["tor"]), follow_up_due_days=365)
    assert summary["site"]["code"] == "TOR"
    assert summary["record_count"] == 4
    # every source of the vocabulary is listed, those no record came from with 0
    assert {e["source"]: e["count"] for e in summary["last_update_sources"]} == {
        **dict.fromkeys(SOURCES, 0), "api": 3, "redcap-sync": 1}
    due = summary["follow_up"]
    assert due["count"] == 2
    assert [r["subject_id"] for r in due["records"]] == ["TOR-cccccccccccccccc",
                                                          "TOR-bbbbbbbbbbbbbbbb"]
    assert [r["days_since"] for r in due["records"]] == [500, 400]
    assert due["records"][1]["source"] == "redcap-sync"
    assert [(w["subject_id"], w["reason"]) for w in summary["withdrawals"]] == [
        ("TOR-eeeeeeeeeeeeeeee", "entered_in_error")]
    shares = {f["name"]: (f["filled"], f["applicable"]) for f in
              summary["completeness"]["fields"]}
    assert shares["ecog_at_met_dx"] == (2, 4)  # MTL's four blanks are not TOR's
    assert shares["histology"] == (2, 4)
    assert shares["lvef_baseline_pct"] == (3, 4)
    assert shares["her2_tested_on"] == (4, 4)
    # Surgery of the primary belongs to de novo disease only: none of these records.
    assert shares["primary_tumour_surgery"] == (0, 0)
    # A longer period leaves one record due; a shorter one all four.
    assert site_summary(caller_of(known_site["tor"]),
                        follow_up_due_days=450)["follow_up"]["count"] == 1
    assert site_summary(caller_of(known_site["tor"]),
                        follow_up_due_days=1)["follow_up"]["count"] == 2


def test_completeness_measures_optional_fields_whose_blank_means_unknown():
    measured, skipped = completeness_fields()
    names = {entry.name for entry in measured}
    why = {entry["name"]: entry["why"] for entry in skipped}
    assert {"ecog_at_met_dx", "histology", "lvef_baseline_pct", "primary_tumour_surgery"} <= names
    assert "list" in why["later_anti_her2"] and "list" in why["local_therapy_metastases"]
    # Fields the rule table requires where they apply are complete by construction.
    for name in ("trastuzumab_stop_day", "cause_of_death", "primary_dx_day", "progression_day"):
        assert name in why and "rules" in why[name]
    assert not names & set(why)
    assert "met_dx_year" not in names | set(why)  # required fields are not optional


def test_my_site_page_shows_the_known_numbers(client, known_site):
    sign_in(client, known_site["tor"])
    home = client.get("/").get_data(as_text=True)
    assert 'href="/site"' in home and 'href="/tables"' not in home
    page = client.get("/site")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert re.search(r'id="record-count">4<', text) and re.search(r'id="due-count">2<', text)
    assert "REDCap sync" in text and "Entered in error" in text
    ecog = re.search(r'data-field="ecog_at_met_dx".*?class="num share">([^<]+)<', text, re.S)
    assert ecog.group(1) == "50%"
    assert "MTL-" not in text and "TOR-eeeeeeeeeeeeeeee" in text
    assert text.index("TOR-cccccccccccccccc") < text.index("TOR-bbbbbbbbbbbbbbbb")
    # The period is changed on the page; a value out of range is said, and the setting used.
    assert 'id="due-count">1<' in client.get("/site?due_after_days=450").get_data(as_text=True)
    refused = client.get("/site?due_after_days=0")
    assert refused.status_code == 400 and b"from 1 to 3650" in refused.data


def without_csrf(page: bytes) -> bytes:
    """The page with every CSRF token's value blanked."""
    return re.sub(rb'(name="csrf_token"[^>]*value=")[^"]*"', rb'\1"', page)


def test_another_sites_record_is_a_404_like_a_missing_one(client, known_site):
    sign_in(client, known_site["tor"])
    theirs = client.get("/site/records/MTL-mmmmmmmmmmmmmmmm")
    missing = client.get("/site/records/TOR-zzzzzzzzzzzzzzzz")
    assert theirs.status_code == missing.status_code == 404
    # byte for byte, but for the asked pseudonym and the sign-out form's CSRF token, which
    # carries a timestamp and so differs when the two requests fall in different seconds
    assert without_csrf(theirs.data) == without_csrf(
        missing.data.replace(b"TOR-zzzzzzzzzzzzzzzz", b"MTL-mmmmmmmmmmmmmmmm"))
    assert client.get("/site/records/MTL-mmmmmmmmmmmmmmmm/withdraw").status_code == 404
    form = client.post("/site/records/MTL-mmmmmmmmmmmmmmmm/withdraw", data={
        "csrf_token": csrf_token(client, "/site"), "reason": "consent_withdrawn",
        "confirm": "withdraw"})
    assert form.status_code == 404
    listing = client.get("/site/records?q=MTL").get_data(as_text=True)
    assert "0 records whose pseudonym contains" in listing and "MTL-m" not in listing


def test_the_records_list_searches_and_orders(client, known_site):
    sign_in(client, known_site["tor"])
    text = client.get("/site/records?q=bbbb").get_data(as_text=True)
    assert "1 record whose pseudonym contains" in text and "TOR-bbbbbbbbbbbbbbbb" in text
    assert "TOR-aaaaaaaaaaaaaaaa" not in text
    oldest = client.get("/site/records?order=oldest").get_data(as_text=True)
    found = re.findall(r"<code>(TOR-[a-z-]+)</code></a>", oldest)
    assert found[:2] == ["TOR-cccccccccccccccc", "TOR-bbbbbbbbbbbbbbbb"] and len(found) == 4
    assert client.get("/site/records?q=%25").get_data(as_text=True).count("<code>TOR-") == 0


def test_roles_keep_to_their_pages(client, known_site):
    sign_in(client, issue_token("coordinator")[1])
    for path in ("/site", "/site/records", "/site/records/TOR-aaaaaaaaaaaaaaaa",
                 "/site/records/TOR-aaaaaaaaaaaaaaaa/withdraw"):
        answer = client.get(path)
        assert answer.status_code == 403 and b"TOR-a" not in answer.data, path
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/")})
    sign_in(client, known_site["tor"])
    for path in ("/tables", "/log", "/releases"):
        assert client.get(path).status_code == 403, path


def test_a_records_history_shows_each_change_and_its_source(client, known_site,
                                                           example_record):
    tor = known_site["tor"]
    subject = "TOR-aaaaaaaaaaaaaaaa"
    put(client, tor, variant(example_record, subject, last_followup_day=3650), "redcap-sync")
    put(client, tor, variant(example_record, subject, last_followup_day=3700,
                             vital_status="dead", cause_of_death="other"))
    sign_in(client, tor)
    text = client.get(f"/site/records/{subject}").get_data(as_text=True)
    versions = re.findall(r'data-version="(\d+)"><p>(.*?)</p>', text, re.S)
    assert [v for v, _ in versions] == ["3", "2", "1"]
    assert "from API" in versions[0][1] and "3 fields changed" in versions[0][1]
    assert "from REDCap sync" in versions[1][1] and "1 field changed" in versions[1][1]
    newest = text.split('data-version="3"')[1].split('data-version="2"')[0]
    assert re.findall(r'data-field="([a-z_]+)"', newest) == [
        "last_followup_day", "vital_status", "cause_of_death"]
    assert re.search(r"<td>day 3650</td><td>day 3700</td>", newest)
    assert re.search(r"<td>not given</td><td>other</td>", newest)
    # Current values are labelled from the dictionary; derived fields are shown.
    assert "Vital status at the last follow-up" in text
    assert re.search(r'data-field="hr_status">.*?<td>positive</td>', text, re.S)
    current = text.split('id="values"')[1].split("</table>")[0]
    assert re.search('data-field="primary_dx_day">.*?<td>day \u22121460 \\(before day 0\\)</td>',
                     current, re.S)
    # A field the rules keep out of this record (maintenance was not interrupted) does not apply.
    assert re.search(r'data-field="trastuzumab_resume_day">.*?does not apply', current, re.S)
    assert re.search(r'data-field="ecog_at_met_dx">.*?<td>1</td>', current, re.S)


def test_withdrawal_needs_the_confirmation_its_reason_and_the_csrf_token(client, known_site):
    subject = "TOR-dddddddddddddddd"
    sign_in(client, known_site["tor"])
    record_page = client.get(f"/site/records/{subject}").get_data(as_text=True)
    assert f'href="/site/records/{subject}/withdraw"' in record_page
    confirm = client.get(f"/site/records/{subject}/withdraw")
    assert confirm.status_code == 200 and b"cannot be undone" in confirm.data
    token = csrf_of(confirm)
    assert client.post(f"/site/records/{subject}/withdraw",
                       data={"reason": "consent_withdrawn", "confirm": "withdraw"}
                       ).status_code == 400  # no CSRF token
    assert client.post(f"/site/records/{subject}/withdraw", data={
        "csrf_token": token, "reason": "because", "confirm": "withdraw"}).status_code == 400
    assert client.post(f"/site/records/{subject}/withdraw", data={
        "csrf_token": token, "reason": "consent_withdrawn"}).status_code == 400
    assert client.get(f"/site/records/{subject}").status_code == 200  # still there
    done = client.post(f"/site/records/{subject}/withdraw", data={
        "csrf_token": token, "reason": "deleted_at_source", "confirm": "withdraw"})
    assert done.status_code == 302 and done.headers["Location"] == "/site"
    # The confirmation message rides in the signed cookie until shown: no pseudonym in it.
    cookie = re.search(r"registry_console=([^;]+)", done.headers["Set-Cookie"]).group(1)
    carried = client.application.session_interface.get_signing_serializer(
        client.application).loads(cookie)
    assert "was withdrawn" in str(carried["_flashes"]) and subject not in str(carried)
    site = client.get("/site").get_data(as_text=True)
    assert "was withdrawn" in site and re.search(r'id="record-count">3<', site)
    assert re.search(subject + r".*?Deleted at the source", site, re.S)
    gone = client.get(f"/site/records/{subject}")
    assert gone.status_code == 410 and b"was withdrawn" in gone.data
    # Sent twice (a double click): the second answer says it is withdrawn; nothing else changes.
    twice = client.post(f"/site/records/{subject}/withdraw", data={
        "csrf_token": token, "reason": "consent_withdrawn", "confirm": "withdraw"})
    assert twice.status_code == 410 and b"deleted at the source" in twice.data
    with transaction() as connection:
        assert connection.execute(Tombstone.__table__.select().where(
            Tombstone.subject_id == subject)).one().reason == "deleted_at_source"
        # The audit log says where the withdrawal was made: on the console, not through the API.
        assert connection.execute(select(AuditEntry.source).where(
            AuditEntry.subject_id == subject, AuditEntry.action == "withdraw")).one() == (
            "console",)
    # The same service as the API's DELETE: the subject is refused there now.
    again = client.put(f"/api/v1/records/{subject}", json={},
                       headers={"Authorization": f"Bearer {known_site['tor']}"})
    assert again.status_code == 409


def csrf_of(answer) -> str:  # noqa: ANN001
    return re.search(r'name="csrf_token" value="([^"]+)"', answer.get_data(as_text=True)).group(1)


def test_every_source_of_the_vocabulary_is_shown_in_words(client, known_site):
    # Every source of the vocabulary is listed, with its count, even before any record came that
    # way (here the spreadsheet upload).
    sign_in(client, known_site["tor"])
    text = client.get("/site").get_data(as_text=True)
    sources = text.split('id="sources"')[1].split("</table>")[0]
    assert re.findall(r'<th scope="row">([^<]+)</th><td class="num">(\d+)</td>', sources) == [
        ("API", "3"), ("REDCap sync", "1"), ("Spreadsheet", "0")]


def test_a_site_without_records_gets_a_page_that_says_so(client, make_site):
    make_site("NEW")
    sign_in(client, issue_token("submitter", "NEW")[1])
    page = client.get("/site")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="record-count">0<' in text
    assert "No record was last updated more than 365 days ago" in text
    assert "none apply" in text and "No record of your site has been withdrawn" in text
    assert "0 records." in client.get("/site/records").get_data(as_text=True)
