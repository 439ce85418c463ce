"""registry-redcap-sync end to end: a fake REDCap and a real registry, both on loopback."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from registry.db import unit_of_work
from registry.models import Record, RecordVersion, Tombstone
from registry.models import Site as Site_
from registry.core.deidentify import build_record, subject_id
from registry.core.fields import check_subject_id
from registry.core.record import DICTIONARY_VERSION, validate_record
from registry.services.intake.record_rows import record_from_row
from registry.site.redcap.cli import main
from registry.site.redcap.client import (
    LOG_FORMS, RENAME_EXAMPLE, is_rename, looks_hashed, parse_log_entry,
)
from registry.site.redcap.config import ConfigError, load_config
from registry.site.redcap.sync import run
from tests.fake_redcap import Fault, FakeRedcap, ServerThread, site_rows
from tests.redcap_support import (
    environment_of, load_project, new_site, registry_server, source_records,
)

DATE_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}")
# No pauses, quick retries; the timeout is the tests' patience, not a fault: a fault test that
# needs a client giving up sets its own (under a loaded CI machine a push of 10 records can
# outlast 1 s, be retried, and come back "unchanged").
FAST = {"pause_seconds": 0, "backoff_seconds": 0.01, "timeout_seconds": 10, "retries": 2,
        "batch_size": 7, "push_batch_size": 10}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry served on loopback with its own database, shared by this module."""
    with registry_server(tmp_path_factory.mktemp("registry")) as served:
        yield served


class Site:
    """One site: its fake REDCap, its registry token, its sync settings."""

    counter = 0

    def __init__(self, registry: Any, tmp_path: Path, count: int = 12, **fake: Any) -> None:
        app, self.capture, url = registry
        self.app = app
        Site.counter += 1
        self.code = f"S{Site.counter:02d}"
        self.fake = FakeRedcap(**fake)
        self.server = ServerThread(self.fake).__enter__()
        self.records = source_records(count, seed=Site.counter)
        load_project(self.fake, self.records)
        self.environ = environment_of(tmp_path / "state", self.server.url, url,
                                      new_site(app, self.code), self.fake.token)
        self.config = load_config(None, environ=self.environ, redcap_timezone=self.fake.zone,
                                  **FAST)

    def sync(self, **options: Any):
        return run(self.config, **options)

    def subject(self, record_id: str) -> str:
        return subject_id(self.config.site_secret, record_id)

    def stored(self) -> dict[str, dict[str, Any]]:
        with self.app.app_context(), unit_of_work() as session:
            rows = session.scalars(select(Record).join(Site_, Site_.id == Record.site_id)
                                   .where(Site_.code == self.code))
            return {row.subject_id: record_from_row(row) for row in rows}

    def versions(self) -> int:
        with self.app.app_context(), unit_of_work() as session:
            return session.scalar(select(func.count()).select_from(RecordVersion).join(
                Record, Record.id == RecordVersion.record_id).join(
                Site_, Site_.id == Record.site_id).where(Site_.code == self.code))

    def close(self) -> None:
        self.server.__exit__()


@pytest.fixture()
def site(registry, tmp_path):
    made = Site(registry, tmp_path)
    yield made
    made.close()


def expected(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the registry stores it (lists in the dictionary's order)."""
    canonical, errors = validate_record({**record, "subject_id": "a" * 16})
    assert errors == []
    return canonical


def test_longitudinal_project_with_repeats_and_checkboxes_arrives_de_identified(site):
    report = site.sync()
    assert report.failure is None and report.exit_code == 0
    assert report.counts["created"] == len(site.records)
    assert report.change_detection == "full"
    stored = site.stored()
    for record_id, record, _ in site.records:
        assert stored[site.subject(record_id)] == expected(record)
    # the rows really were longitudinal, with a repeating instrument and checkboxes
    exported = [request for request in site.fake.requests if request["content"] == "record"]
    assert exported and all(request["format"] == "json" for request in exported)


def test_second_run_writes_nothing_and_edits_new_and_deleted_records_arrive(site):
    assert site.sync().exit_code == 0
    versions = site.versions()
    again = site.sync()
    assert again.exit_code == 0 and again.change_detection == "logging"
    assert again.counts["created"] == again.counts["updated"] == 0
    assert site.versions() == versions

    edited_id, edited, day_zero = site.records[0]
    edited = {**edited, "lvef_baseline_pct": 71, "lvef_nadir_pct": 60}
    site.fake.save(edited_id, site_rows(edited, day_zero))
    new_id, new, new_zero = source_records(1, seed=999)[0]
    new_id = "ptnew1"
    site.fake.save(new_id, site_rows(new, new_zero))
    gone_id = site.records[1][0]
    site.fake.delete(gone_id)

    report = site.sync()
    assert report.exit_code == 0, report.as_dict()
    assert report.counts["updated"] == 1 and report.counts["created"] == 1
    assert report.counts["withdrawn"] == 1
    stored = site.stored()
    assert stored[site.subject(edited_id)]["lvef_baseline_pct"] == 71
    assert site.subject(new_id) in stored and site.subject(gone_id) not in stored
    with site.app.app_context(), unit_of_work() as session:
        reason = session.scalar(select(Tombstone.reason).where(
            Tombstone.subject_id == site.subject(gone_id)))
    assert reason == "deleted_at_source"
    updated = [line for line in report.records if line["outcome"] == "updated"]
    assert updated[0]["changed_fields"] == ["lvef_baseline_pct", "lvef_nadir_pct"]


def test_dry_run_writes_nothing_and_keeps_the_watermark(site):
    first = site.sync(dry_run=True)
    assert first.counts["created"] == len(site.records)
    assert site.stored() == {} and first.watermark["advanced"] is False
    assert not (site.config.state_dir / "state.json").exists()
    site.sync()
    state = (site.config.state_dir / "state.json").read_text()
    record_id, record, day_zero = site.records[2]
    ecog = 3 if record.get("ecog_at_met_dx") != 3 else 4
    site.fake.save(record_id, site_rows({**record, "ecog_at_met_dx": ecog}, day_zero))
    versions = site.versions()
    dry = site.sync(dry_run=True)
    assert [line["changed_fields"] for line in dry.records] == [["ecog_at_met_dx"]]
    assert site.versions() == versions
    assert (site.config.state_dir / "state.json").read_text() == state
    assert site.sync().counts["updated"] == 1


@pytest.mark.parametrize("fault, expected_words", [
    (Fault("500", times=-1), "500"),
    (Fault("timeout", times=-1), "did not answer in time"),
    (Fault("html", times=-1), "not JSON"),
    (Fault("missing_rows", times=-1), "did not come back"),
    (Fault("500", content="metadata", times=-1), "metadata export"),
])
def test_a_fault_fails_cleanly_and_the_next_good_run_completes(site, fault, expected_words):
    site.config.timeout_seconds, site.fake.slow_seconds = 1, 1.5
    site.fake.faults.append(fault)
    report = site.sync()
    assert report.exit_code == 2 and expected_words in report.failure
    assert report.as_dict()["status"] == "failed"
    assert site.stored() == {}
    assert not (site.config.state_dir / "state.json").exists()
    site.fake.faults.clear()
    site.config.timeout_seconds = FAST["timeout_seconds"]
    good = site.sync()
    assert good.exit_code == 0 and good.counts["created"] == len(site.records)


def test_transient_failures_are_retried_but_refusals_are_not(site):
    site.fake.faults.append(Fault("500", times=2))
    assert site.sync().exit_code == 0
    site.fake.token = "F" * 32
    metadata_calls = sum(request["content"] == "metadata" for request in site.fake.requests)
    refused = site.sync()
    assert refused.exit_code == 2 and "403" in refused.failure
    assert sum(request["content"] == "metadata" for request in site.fake.requests) == \
        metadata_calls + 1


def test_hashed_record_ids_abort_with_a_clear_message(registry, tmp_path):
    site = Site(registry, tmp_path, count=3, hashed_ids=True)
    try:
        report = site.sync()
        assert report.exit_code == 2 and "de-identified export rights" in report.failure
        assert site.stored() == {}
    finally:
        site.close()


def test_without_logging_right_changes_come_from_date_range(registry, tmp_path):
    site = Site(registry, tmp_path, count=4, logging_right=False, longitudinal=False)
    try:
        assert site.sync().exit_code == 0
        record_id, record, day_zero = site.records[0]
        other = "lobular" if record.get("histology") != "lobular" else "ductal"
        site.fake.save(record_id, site_rows({**record, "histology": other}, day_zero,
                                            longitudinal=False))
        report = site.sync()
        assert report.change_detection == "dateRangeBegin" and not report.deletions_detected
        assert report.counts["updated"] == 1
        assert any("dateRangeBegin" in request for request in site.fake.requests)
    finally:
        site.close()


def test_full_run_reports_records_gone_from_redcap(site):
    site.sync()
    site.fake.logging_right = False  # the deletion cannot be seen incrementally
    gone = site.records[0][0]
    site.fake.delete(gone)
    report = site.sync(full=True)
    assert report.missing_from_source == [site.subject(gone)]
    assert site.subject(gone) in site.stored()  # reported, not withdrawn


def test_invalid_records_go_to_the_report_not_the_registry(site):
    bad_id, record, day_zero = site.records[0]
    rows = site_rows(record, day_zero)
    rows[0]["trastuzumab_start_date"] = "2015-13-45"  # a legacy value
    site.fake.save(bad_id, rows)
    late_id, late, late_zero = site.records[1]
    site.fake.save(late_id, site_rows({**late, "best_response": "partial_response"}, late_zero))
    report = site.sync()
    assert report.exit_code == 1 and report.counts["invalid"] == 2
    lines = {line["subject_id"]: line for line in report.records if line["outcome"] == "invalid"}
    assert {"field": "trastuzumab_start_date", "code": "malformed_date",
            "registry_field": "trastuzumab_start_day"}.items() <= \
        lines[site.subject(bad_id)]["errors"][0].items()
    assert [error["code"] for error in lines[site.subject(late_id)]["errors"]] == \
        ["not_in_remission"]
    assert "2015-13-45" not in json.dumps(report.as_dict())
    assert set(site.stored()) == {site.subject(rid) for rid, _, _ in site.records[2:]}


def test_nothing_identifying_reaches_the_registry(site):
    site.capture.captured.clear()
    site.sync()
    traffic = "\n".join(site.capture.captured)
    assert traffic and "records/batch" in traffic
    assert not DATE_SHAPE.search(traffic)
    assert "pt0" not in traffic and "record_id" not in traffic
    for request in site.capture.captured:
        if "records/batch" in request:
            body = json.loads(request.split(" ", 2)[2])
            for record in body["records"]:
                assert set(record) - {"subject_id"} <= set(expected(record))
                assert "met_dx_date" not in record
    with site.app.app_context(), unit_of_work() as session:
        stored = session.execute(select(RecordVersion.data, Record.subject_id).join(
            Record, Record.id == RecordVersion.record_id).join(
            Site_, Site_.id == Record.site_id).where(Site_.code == site.code)).all()
    assert stored
    for data, subject in stored:
        assert not DATE_SHAPE.search(json.dumps(data)) and "pt0" not in subject
        assert re.fullmatch(r"[a-p]{32}", subject)


def test_command_line_run_writes_a_report_without_values_or_tokens(site, monkeypatch, capsys):
    for name, value in site.environ.items():
        monkeypatch.setenv(name, value)
    config = site.config.state_dir.parent / "sync.toml"
    config.write_text("pause_seconds = 0\nbackoff_seconds = 0.01\ntimeout_seconds = 2\n"
                      f'redcap_timezone = "{site.fake.zone}"\n')
    report_path = site.config.state_dir.parent / "report.json"
    assert main(["--config", str(config), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["counts"]["created"] == len(site.records)
    output = capsys.readouterr().err + report_path.read_text()
    for secret in ("REDCAP_API_TOKEN", "REGISTRY_TOKEN", "REGISTRY_SITE_SECRET"):
        assert site.environ[secret] not in output
    assert not DATE_SHAPE.search(report_path.read_text().replace(report["started_at"], "")
                                 .replace(report["finished_at"], "")
                                 .replace(report["watermark"]["new"], ""))
    assert main(["--config", str(config), "--dry-run"]) == 0
    assert list((site.config.state_dir / "reports").glob("sync-*.json"))


def test_secrets_in_a_readable_config_file_are_refused(tmp_path):
    path = tmp_path / "sync.toml"
    path.write_text('registry_token = "x"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="REDCAP_API_URL"):
        load_config(None, environ={})


def test_subject_ids_are_letters_that_pass_the_registry_rules():
    made = {subject_id("k" * 32, str(number)) for number in range(2000)}
    assert len(made) == 2000
    for value in made:
        assert re.fullmatch(r"[a-p]{32}", value)
        check_subject_id(value)
    assert subject_id("k" * 32, "7", "TOR-").startswith("TOR-")


def test_assembly_reports_conflicts_and_takes_the_latest_visit(example_record):
    from datetime import date

    record = dict(example_record)
    record.pop("subject_id")
    fake = FakeRedcap()
    fake.save("1", site_rows(record, date(2012, 3, 1), earlier_visits=2))
    rows = fake.flat_rows(["1"])
    assert len(rows) == 4 and [row["redcap_repeat_instance"] for row in rows] == ["", 1, 2, 3]
    assert rows[0]["metastatic_sites___liver"] == "1" and rows[1]["metastatic_sites___liver"] == ""
    rows.insert(1, rows.pop())  # the order of rows does not matter
    built, problems = build_record(rows, "abcdefghabcdefgh")
    assert problems == [] and built["last_followup_day"] == 3300
    assert built["metastatic_sites"] == ["bone", "liver"]
    rows[2]["last_followup_date"] = "2012-02-30"  # a legacy value in an earlier visit
    assert build_record(rows, "abcdefghabcdefgh")[1][0]["code"] == "malformed_date"
    rows[2]["last_followup_date"] = "2013-01-01"
    rows[0]["sex"] = "female"
    rows[1]["sex"] = "male"
    built, problems = build_record(rows, "abcdefghabcdefgh")
    assert built is None and problems[0]["code"] == "conflicting_values"
    assert looks_hashed(["0cc175b9c0f1b6a831c399e269772661"]) and not looks_hashed(["12"])


def test_hashed_ids_in_an_incremental_run_also_abort(site):
    assert site.sync().exit_code == 0
    record_id, record, day_zero = site.records[0]
    site.fake.save(record_id, site_rows({**record, "lvef_baseline_pct": None,
                                         "lvef_nadir_pct": None}, day_zero))
    site.fake.hashed_ids = True
    report = site.sync()
    assert report.exit_code == 2 and "de-identified export rights" in report.failure


def test_a_project_on_another_dictionary_version_is_refused(registry, tmp_path):
    site = Site(registry, tmp_path, count=2)
    try:
        marker = next(row for row in site.fake.metadata
                      if row["field_name"] == "registry_dict_version")
        marker["field_annotation"] = "REGISTRY_DICTIONARY_VERSION=0.9.0"
        report = site.sync()
        assert report.exit_code == 2 and "import the current dictionary" in report.failure
        marker["field_annotation"] = f"REGISTRY_DICTIONARY_VERSION={DICTIONARY_VERSION}"
        site.fake.metadata = [row for row in site.fake.metadata
                              if row["field_name"] != "lesion_count"]
        report = site.sync()
        assert report.exit_code == 2 and "lesion_count" in report.failure
        assert site.stored() == {}
    finally:
        site.close()


def test_the_fake_speaks_like_redcap_to_pycap(site):
    import redcap

    project = redcap.Project(site.environ["REDCAP_API_URL"], site.fake.token)
    assert project.is_longitudinal and project.def_field == "record_id"
    rows = project.export_records(records=[site.records[0][0]])
    assert {row["redcap_repeat_instance"] for row in rows} == {"", 1, 2}
    assert all(isinstance(value, str) for row in rows for key, value in row.items()
               if key != "redcap_repeat_instance")
    assert project.export_repeating_instruments_events() == [
        {"event_name": "follow_up_arm_1", "form_name": "follow_up"}]
    names = project.export_field_names()
    assert {"original_field_name": "her2_ihc", "choice_value": "",
            "export_field_name": "her2_ihc"} in names
    import requests

    no_format = requests.post(site.environ["REDCAP_API_URL"], data={"token": "B" * 32,
                                                                    "content": "metadata"})
    assert no_format.status_code == 403 and "<error>" in no_format.text
    json_errors = requests.post(site.environ["REDCAP_API_URL"], data={
        "token": "B" * 32, "content": "metadata", "format": "csv", "returnFormat": "json"})
    assert json_errors.json() == {"error": "You do not have permissions to use the API"}
    bad = redcap.Project(site.environ["REDCAP_API_URL"], "A" * 32)
    with pytest.raises(redcap.RedcapError):
        bad.export_metadata()


def test_redcap_error_messages_lose_record_ids_and_dates():
    from registry.site.redcap.client import _scrub

    text = _scrub("The following records were not found: pt0001, 17 (since 2020-01-01)")
    assert "pt0001" not in text and "17" not in text and "2020" not in text
    assert text.startswith("The following records were not found")


def test_an_unknown_time_zone_is_refused(tmp_path):
    environ = {"REDCAP_API_URL": "http://127.0.0.1:1/api/", "REDCAP_API_TOKEN": "A" * 32,
               "REGISTRY_URL": "http://127.0.0.1:2", "REGISTRY_TOKEN": "t",
               "REGISTRY_SITE_SECRET": "s" * 32}
    assert load_config(None, environ=environ).redcap_timezone == ""
    with pytest.raises(ConfigError, match="subject_prefix"):
        load_config(None, environ=environ, subject_prefix="TOR-123456")
    with pytest.raises(ConfigError, match="IANA"):
        load_config(None, environ=environ, redcap_timezone="Mars/Olympus")


@pytest.mark.parametrize("action, kind, source", LOG_FORMS)
def test_every_record_level_log_form_is_read(action, kind, source):
    assert source
    assert parse_log_entry({"action": action}) == ("12", kind)
    # the record column is trusted over the action text (an id may hold spaces or brackets)
    assert parse_log_entry({"action": action.replace("12", "a (b)"), "record": "a (b)"}) == \
        ("a (b)", kind)


def test_a_rename_is_told_from_other_updates_by_its_details():
    assert parse_log_entry(RENAME_EXAMPLE) == ("13", "change") and is_rename(RENAME_EXAMPLE,
                                                                             "record_id")
    assert not is_rename(RENAME_EXAMPLE, "study_id")
    assert not is_rename({**RENAME_EXAMPLE, "action": "Create record 13"}, "record_id")
    assert not is_rename({**RENAME_EXAMPLE, "details": "lvef_baseline_pct = '60'"}, "record_id")
    assert not is_rename({**RENAME_EXAMPLE, "details": "old_record_id = '13'"}, "record_id")


def test_log_entries_that_name_no_record_are_counted_not_guessed():
    assert parse_log_entry({"action": "Created Record (API) 7-a"}) == ("7-a", "change")
    assert parse_log_entry({"action": "Deleted Record pt00001 (API)"}) == ("pt00001", "delete")
    assert parse_log_entry({"action": "Manage/Design", "record": ""}) is None
    assert parse_log_entry({"action": "Lock/Unlock Record 3"}) is None
    # a record-level form not listed, on a server with the record column: read the record again
    assert parse_log_entry({"action": "Delete all record data for single form",
                            "record": "3"}) == ("3", "change")


def test_a_registry_refusal_fails_the_run_and_keeps_the_watermark(site):
    from dataclasses import replace

    refused = run(replace(site.config, registry_token="not-a-token"))
    assert refused.exit_code == 2 and "401" in refused.failure
    assert "not-a-token" not in json.dumps(refused.as_dict())
    assert not (site.config.state_dir / "state.json").exists() and site.stored() == {}
    assert site.sync().counts["created"] == len(site.records)


# --- change detection against REDCap as it really logs -----------------------------------------

def edited(site: Site, index: int) -> tuple[str, dict[str, Any], Any]:
    """A record of the site with a registry field changed (the LVEF values)."""
    record_id, record, day_zero = site.records[index]
    baseline = 70 + index if record.get("lvef_baseline_pct") != 70 + index else 60 + index
    return record_id, {**record, "lvef_baseline_pct": baseline, "lvef_nadir_pct": None}, day_zero


@pytest.mark.parametrize("record_column", [True, False], ids=["record-column", "old-server"])
def test_survey_calculated_api_and_imported_changes_arrive_on_the_next_run(
        registry, tmp_path, record_column):
    site = Site(registry, tmp_path, count=7, record_column=record_column)
    try:
        assert site.sync().exit_code == 0
        ways = ("survey", "api_autocalc", "autocalc", "api", "import", "form")
        for index, via in enumerate(ways):
            record_id, record, day_zero = edited(site, index)
            site.fake.save(record_id, site_rows(record, day_zero), via=via)
        new_id, new, new_zero = source_records(1, seed=4242)[0]
        site.fake.save("survey-new", site_rows(new, new_zero), via="survey")
        # an entry of a form the sync does not know: counted; read again when it names a record
        site.fake.log.insert(0, {"timestamp": site.fake.log[0]["timestamp"], "username": "x",
                                 "action": "Randomize Record pt00006", "details": "",
                                 **({"record": "pt00006"} if record_column else {})})
        actions = [entry["action"] for entry in site.fake.log[1:len(ways) + 2]]
        assert actions[0] == "Create Response survey-new (Baseline (Arm 1: Arm 1))"
        assert "Update record (API) (Auto calculation) pt00001 (Baseline (Arm 1: Arm 1))" \
            in actions and "Update Response pt00000 (Baseline (Arm 1: Arm 1))" in actions

        report = site.sync()
        assert report.exit_code == 0, report.as_dict()
        assert report.change_detection == "logging"
        assert report.counts["updated"] == len(ways) and report.counts["created"] == 1
        assert report.log_entries_not_understood == (0 if record_column else 1)
        stored = site.stored()
        for index in range(len(ways)):
            record_id, record, _ = edited(site, index)
            assert stored[site.subject(record_id)]["lvef_baseline_pct"] == \
                record["lvef_baseline_pct"]
        assert site.subject("survey-new") in stored
    finally:
        site.close()


@pytest.mark.parametrize("newest_first, longitudinal", [
    (True, True), (True, False), (False, False)], ids=["longitudinal", "classic", "reversed-log"])
def test_a_record_created_and_deleted_in_one_minute_leaves_the_next_run_green(
        registry, tmp_path, newest_first, longitudinal):
    site = Site(registry, tmp_path, count=3, newest_first=newest_first, longitudinal=longitudinal)
    try:
        assert site.sync().exit_code == 0
        versions, before = site.versions(), site.stored()
        wrong_id, wrong, wrong_zero = source_records(1, seed=77)[0]
        with site.fake.same_minute():  # entered in the wrong project, deleted at once
            site.fake.save("wrong1", site_rows(wrong, wrong_zero, longitudinal=longitudinal))
            site.fake.delete("wrong1")
        assert site.fake.log[0]["timestamp"] == site.fake.log[1]["timestamp"]
        state = json.loads((site.config.state_dir / "state.json").read_text())

        report = site.sync()
        assert report.exit_code == 0 and report.failure is None, report.as_dict()
        assert report.counts["not_in_registry"] == 1 and report.counts["created"] == 0
        assert report.watermark["advanced"] and report.watermark["new"] >= state["watermark"]
        assert site.stored() == before and site.versions() == versions  # nothing written
        assert site.sync().exit_code == 0  # and the run after it too
    finally:
        site.close()


def test_a_record_edited_and_deleted_in_one_minute_arrives_as_a_withdrawal(site):
    assert site.sync().exit_code == 0
    record_id, record, day_zero = edited(site, 0)
    other_id, other, other_zero = edited(site, 1)
    with site.fake.same_minute():
        site.fake.save(record_id, site_rows(record, day_zero), via="survey")
        site.fake.delete(record_id)
        site.fake.save(other_id, site_rows(other, other_zero), via="api")
        site.fake.delete(other_id, via="api")
        site.fake.save(other_id, site_rows(other, other_zero), via="import")  # entered again

    report = site.sync()
    assert report.exit_code == 0, report.as_dict()
    assert report.counts["withdrawn"] == 1 and report.counts["updated"] == 1
    assert [line["subject_id"] for line in report.records if line["outcome"] == "withdrawn"] \
        == [site.subject(record_id)]
    stored = site.stored()
    assert site.subject(record_id) not in stored
    assert stored[site.subject(other_id)]["lvef_baseline_pct"] == other["lvef_baseline_pct"]
    with site.app.app_context(), unit_of_work() as session:
        reason = session.scalar(select(Tombstone.reason).where(
            Tombstone.subject_id == site.subject(record_id)))
    assert reason == "deleted_at_source"
    again = site.sync()  # the overlap reads the same minute: withdrawing again changes nothing
    assert again.exit_code == 0 and again.counts["updated"] == 0 and site.stored() == stored


def test_survey_and_api_deletions_arrive_as_withdrawals(site):
    assert site.sync().exit_code == 0
    site.fake.delete(site.records[0][0], via="survey")
    site.fake.delete(site.records[1][0], via="api")
    event = " (Baseline (Arm 1: Arm 1))"
    assert [entry["action"] for entry in site.fake.log[:2]] == [
        f"Delete record (API) {site.records[1][0]}{event}",
        f"Deleted Response {site.records[0][0]}{event}"]
    report = site.sync()
    assert report.exit_code == 0 and report.counts["withdrawn"] == 2


def test_a_record_deleted_between_the_log_and_the_export_is_a_deletion(site):
    """A record the log names as changed but REDCap no longer lists was deleted."""
    assert site.sync().exit_code == 0
    record_id, record, day_zero = edited(site, 2)
    site.fake.save(record_id, site_rows(record, day_zero))
    site.fake.logging_right = False  # dateRangeBegin names it; then it goes
    original = site.fake._records

    def delete_after_listing(form, fault):  # runs under the fake's lock
        answer = original(form, fault)
        listing = not any(key.startswith("records[") for key in form)
        if listing and site.fake.records.pop(record_id, None):
            site.fake._touch(record_id, "Delete record {id}{arm}", "site_dm", "")
        return answer
    site.fake._records = delete_after_listing
    report = site.sync()
    assert report.exit_code == 0, report.as_dict()
    assert report.counts["withdrawn"] == 1 and site.subject(record_id) not in site.stored()


def test_a_listed_record_that_does_not_come_back_fails_by_name_and_the_next_run_recovers(site):
    assert site.sync().exit_code == 0
    state = (site.config.state_dir / "state.json").read_text()
    record_id, record, day_zero = edited(site, 3)
    site.fake.save(record_id, site_rows(record, day_zero))
    site.fake.faults.append(Fault("missing_rows", times=2))  # the batch and the second ask
    versions = site.versions()
    failed = site.sync()
    assert failed.exit_code == 2 and site.subject(record_id) in failed.failure
    assert "next run asks for them again" in failed.failure
    assert [line["outcome"] for line in failed.records] == ["not_exported"]
    assert site.versions() == versions  # nothing sent
    assert (site.config.state_dir / "state.json").read_text() == state  # watermark kept
    recovered = site.sync()  # incremental, no --full
    assert recovered.exit_code == 0 and recovered.mode == "incremental"
    assert recovered.counts["updated"] == 1


def test_the_fake_keeps_time_as_a_server_in_its_own_zone_does(site):
    from email.utils import parsedate_to_datetime
    from zoneinfo import ZoneInfo

    import requests

    answer = requests.post(site.environ["REDCAP_API_URL"], data={
        "token": site.fake.token, "content": "log", "format": "json", "logtype": "record"})
    date = answer.headers["Date"]
    assert date.endswith(" GMT") and "," not in date.split(",", 1)[1]  # one Date header
    server = parsedate_to_datetime(date)
    local = server.astimezone(ZoneInfo(site.fake.zone)).strftime("%Y-%m-%d %H:%M")
    newest = answer.json()[0]
    assert set(newest) == {"timestamp", "username", "action", "details", "record"}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", newest["timestamp"])  # minutes
    assert newest["timestamp"] <= local and server.utcoffset().total_seconds() == 0
    assert site.fake.now().strftime("%Y-%m-%d %H:%M") != \
        server.strftime("%Y-%m-%d %H:%M")  # not UTC


def test_records_are_checked_under_the_registrys_published_threshold(registry, tmp_path,
                                                                     monkeypatch):
    site = Site(registry, tmp_path, count=1)
    try:
        record_id, record, day_zero = site.records[0]
        short = {**record, "progression_day": None, "disease_status_last": "ned",
                 "vital_status": "alive", "cause_of_death": None,
                 "last_followup_day": record["remission_start_day"] + 500}
        for name in ("trastuzumab_stop_day", "trastuzumab_resume_day"):
            if (short.get(name) or 0) > short["last_followup_day"]:
                short.update(maintenance_status="ongoing", trastuzumab_stop_day=None,
                             trastuzumab_resume_day=None, discontinuation_reason=None)
        site.fake.save(record_id, site_rows(short, day_zero))
        monkeypatch.setitem(site.app.config, "REGISTRY_MIN_REMISSION_DAYS", 365)
        report = site.sync()
        assert report.exit_code == 0 and report.counts["created"] == 1, report.as_dict()
    finally:
        site.close()


def test_a_survey_response_removed_while_the_record_stays_arrives_as_a_change(site):
    """"Deleted Response" is a Stop Action removing a survey's answers: the record may stay."""
    assert site.sync().exit_code == 0
    record_id, record, day_zero = edited(site, 4)
    site.fake.erase_response(record_id, site_rows(record, day_zero))
    assert site.fake.log[0]["action"].startswith(f"Deleted Response {record_id}")
    report = site.sync()
    assert report.exit_code == 0, report.as_dict()
    assert report.counts["updated"] == 1 and report.counts["withdrawn"] == 0
    assert site.stored()[site.subject(record_id)]["lvef_baseline_pct"] == \
        record["lvef_baseline_pct"]


def test_a_renamed_record_arrives_under_its_new_name_and_its_old_name_is_withdrawn(site):
    assert site.sync().exit_code == 0
    old_id = site.records[5][0]
    before = site.stored()[site.subject(old_id)]
    site.fake.rename(old_id, "renamed-5")
    assert not any(old_id in entry["action"] or entry.get("record") == old_id
                   for entry in site.fake.log)  # REDCap rewrote its earlier entries

    report = site.sync()
    assert report.exit_code == 0, report.as_dict()
    assert report.counts["created"] == 1 and report.counts["withdrawn"] == 1
    assert [line["reason"] for line in report.records if line["outcome"] == "withdrawn"] == \
        ["renamed_at_source"]
    stored = site.stored()
    assert site.subject(old_id) not in stored and stored[site.subject("renamed-5")] == before
    with site.app.app_context(), unit_of_work() as session:
        reason = session.scalar(select(Tombstone.reason).where(
            Tombstone.subject_id == site.subject(old_id)))
    assert reason == "deleted_at_source"
    again = site.sync()  # the overlap reads the rename again: nothing more is withdrawn
    assert again.exit_code == 0 and again.counts["withdrawn"] == again.counts["created"] == 0
    assert site.stored() == stored


def test_a_rename_withdraws_only_the_old_name_and_reports_other_missing_records(site):
    """A registry record that REDCap no longer lists and that does not hold what a renamed
    record holds went another way (here deleted together with its logging, which REDCap allows
    when the project lets users delete a record's log; a token that sees one Data Access Group
    only would look the same): it is reported, not withdrawn."""
    assert site.sync().exit_code == 0
    # the record that went another way comes first in the registry's order
    unseen, old_id = sorted((site.records[6][0], site.records[7][0]), key=site.subject)
    site.fake.delete(unseen)
    site.fake.log = [entry for entry in site.fake.log if entry["log_record"] != unseen]
    site.fake.rename(old_id, "renamed-7")

    report = site.sync(dry_run=True)
    assert [(line["subject_id"], line["outcome"]) for line in report.records] == [
        (site.subject("renamed-7"), "created"), (site.subject(old_id), "withdrawn")]
    report = site.sync()
    assert report.exit_code == 0, report.as_dict()
    assert report.counts["withdrawn"] == 1 and report.counts["created"] == 1
    assert report.missing_from_source == [site.subject(unseen)]
    stored = site.stored()
    assert site.subject(old_id) not in stored and site.subject("renamed-7") in stored
    assert site.subject(unseen) in stored  # reported, not withdrawn
