"""privacy.md section 1, "At the door": nothing identifying enters, and nothing refused is echoed.

Unknown and identifier-named fields, calendar dates in any string position, identifier-shaped
subject ids and registry-owned keys are each refused with their own code; the refused value never
appears in the response, and nothing is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import string

import pytest
from sqlalchemy import func, select

from conftest import EXAMPLE_RECORD
from registry.db import unit_of_work
from registry.models import RecordVersion, Tombstone
from registry.core.fields import Code, CodeList, SubjectId, WholeNumber, check_subject_id
from registry.core.record import RecordSchema
from rejections import VIAS, assert_rejected, changed, submit

SECRET = "Zq-Secret-Value-4417"  # stands for any identifying value a site might send by mistake

UNKNOWN_NAMES = ["favourite_colour", "tumour_size_mm", "notes", "her2_ihc_score", "Sex"]
IDENTIFIER_NAMES = [
    "name", "patientName", "patient_name", "first_name", "lastName", "FullName", "NAMES",
    "mrn", "MRN", "patient_mrn", "medical_record_number", "MedicalRecordNumber",
    "chart", "chart_no", "ChartNumber",
    "dob", "DOB", "date_of_birth", "dateOfBirth", "DateOfBirth", "birthdate", "birth_year",
    "health_card", "HealthCardNumber", "healthcard", "health-card-number", "hcn", "HCN",
    "ohip", "OHIP_number", "ohipNo",
    "sin", "SIN", "social_insurance_number", "ssn", "SSN", "SocialSecurityNumber",
    "email", "e_mail", "EMail", "emailAddress", "e-mail",
    "phone", "PhoneNumber", "telephone", "tel", "cell_phone",
    "fax", "FaxNumber", "fax_no",
    "address", "home_address", "StreetAddress",
    "postal", "postal_code", "PostalCode", "postcode",
    "zip", "ZIP", "zip_code", "zipcode",
    "city", "City", "home_city",
    "ip", "IP", "ip_address", "IPAddress",
    "url", "URL", "web_url", "website",
]
# Field names that themselves hold an identifier: the name is not echoed either.
IDENTIFYING_NAMES = ["jane.doe@example.com", "416-555-0199", "M5G 2C4", "2012-05-01"]

DATES = [
    "2012-05-01", "2012/5/1", "2012.05.01", "01/05/2012", "5-1-12", "1 May 2012", "01-may-12",
    "May 1, 2012", "Sept. 3, 2012", "March 3rd 2012", "20120501", "2012-05-01T10:00:00Z",
    "2012-05", "05/2012", "May 2012",
]
# Every kind of string position of a record: (field, how the date is placed there).
DATE_POSITIONS = {
    "enum": lambda date: {"sex": date},
    "optional enum": lambda date: {"histology": date},
    "list item": lambda date: {"metastatic_sites": ["bone", date]},
    "optional list item": lambda date: {"later_anti_her2": [date]},
    "year": lambda date: {"met_dx_year": date},
    "age": lambda date: {"age_at_met_dx": date},
    "day": lambda date: {"trastuzumab_start_day": date},
    "optional number": lambda date: {"ecog_at_met_dx": date},
    "subject_id": lambda date: {"subject_id": f"TOR-{date}"},
}
POSITION_FIELDS = {"enum": "sex", "optional enum": "histology", "list item": "metastatic_sites",
                   "optional list item": "later_anti_her2", "year": "met_dx_year",
                   "age": "age_at_met_dx", "day": "trastuzumab_start_day",
                   "optional number": "ecog_at_met_dx", "subject_id": "subject_id"}

IDENTIFIER_LIKE_IDS = [
    # 6 or more consecutive digits
    "ABC1234567", "TOR-123456", "site.4711081", "4165550199",
    # e-mail
    "jane.doe@example.com", "TOR-jane@site", "jane.doe(at)example",
    # phone numbers
    "416-555-0199", "(416) 555-0199", "416.555.0199", "+1-416-555-0199", "+14165550199",
    "TOR-416-555-0199", "416 555 0199", "1 416 555 0199",
    # Canadian postal codes and US ZIP+4
    "M5G 2C4", "M5G2C4", "TOR-M5G2C4", "m5g-2c4", "90210-1234", "TOR-90210-1234",
    # 10-digit health-card numbers with separators (Ontario: 4-3-3 and a version code)
    "1234-567-890", "1234 567 890", "1234-567-890-AB", "TOR-1234-567-890",
    # 9-digit SIN / SSN with and without separators
    "123-456-789", "123 456 789", "123456789", "123-45-6789", "TOR-123-45-6789",
    # URLs and IP addresses
    "http://x.example", "https-example", "www.example.com", "example.com", "TOR.example.org",
    "hospital.ca", "192.168.1.20", "10.0.0.1", "TOR-10.0.0.1",
]


def _random_letters(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(string.ascii_letters, k=length))


def _hmac_in_letters(key: bytes, study_id: str) -> str:
    """The REDCap sync's pseudonym: HMAC-SHA256, each 4 bits written as one of a..p."""
    digest = hmac.new(key, study_id.encode(), hashlib.sha256).hexdigest()
    return digest.translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))


def _stored_count(client, headers) -> int:  # noqa: ANN001
    return len(client.get("/api/v1/records", headers=headers).json["records"])


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("name", UNKNOWN_NAMES)
def test_unknown_field_is_refused_not_dropped(client, site_a, name, via):
    record = {**EXAMPLE_RECORD, name: SECRET}
    errors = assert_rejected(submit(client, site_a, record, via), [(name, "unknown_field")],
                             hidden=(SECRET,))
    assert "dictionary" in errors[0]["message"]
    assert _stored_count(client, site_a) == 0


def test_each_unknown_field_is_reported(client, site_a):
    record = {**EXAMPLE_RECORD, "notes": SECRET, "comment": SECRET + "x", "patient_name": "Jo"}
    assert_rejected(submit(client, site_a, record), [
        ("notes", "unknown_field"), ("comment", "unknown_field"),
        ("patient_name", "prohibited_field")], hidden=(SECRET,))


@pytest.mark.parametrize("name", IDENTIFIER_NAMES)
def test_identifier_named_field_is_prohibited(client, site_a, name):
    record = {**EXAMPLE_RECORD, name: SECRET}
    shown = "(unnamed field)" if "-" in name else name  # only plain names are named back
    assert_rejected(submit(client, site_a, record, "post"), [(shown, "prohibited_field")],
                    hidden=(SECRET,))
    assert _stored_count(client, site_a) == 0


@pytest.mark.parametrize("name", IDENTIFYING_NAMES)
def test_a_field_name_holding_an_identifier_is_not_echoed(client, site_a, name):
    record = {**EXAMPLE_RECORD, name: 1}
    response = submit(client, site_a, record, "post")
    assert_rejected(response, [("(unnamed field)", "unknown_field")], hidden=(name,))


@pytest.mark.parametrize("date", DATES)
def test_date_in_any_string_position_is_refused(client, site_a, date):
    """The date sits in every kind of position at once: one date_not_allowed for each."""
    record = dict(EXAMPLE_RECORD)
    for place in DATE_POSITIONS.values():
        record = changed(record, place(date))
    assert_rejected(submit(client, site_a, record, "post"),
                    [(field, "date_not_allowed") for field in POSITION_FIELDS.values()],
                    hidden=(date,))


@pytest.mark.parametrize("position", sorted(DATE_POSITIONS))
def test_a_date_alone_is_refused_in_each_position(client, site_a, position):
    record = changed(EXAMPLE_RECORD, DATE_POSITIONS[position]("2012-05-01"))
    assert_rejected(submit(client, site_a, record, "post"),
                    [(POSITION_FIELDS[position], "date_not_allowed")], hidden=("2012-05-01",))


@pytest.mark.parametrize("subject_id", IDENTIFIER_LIKE_IDS)
def test_identifier_like_subject_id_is_refused(client, site_a, subject_id):
    record = {**EXAMPLE_RECORD, "subject_id": subject_id}
    errors = assert_rejected(submit(client, site_a, record, "post"),
                             [("subject_id", "identifier_like")], hidden=(subject_id,))
    assert "letters" in errors[0]["message"]  # the error says which forms always pass
    assert _stored_count(client, site_a) == 0


@pytest.mark.parametrize("subject_id", ["TOR-123456", "416-555-0199", "M5G2C4", "123-45-6789",
                                        "10.0.0.1", "TOR-2012-05-01"])
def test_put_refuses_an_identifier_in_the_url(client, site_a, subject_id):
    code = "date_not_allowed" if "2012" in subject_id else "identifier_like"
    record = {**EXAMPLE_RECORD, "subject_id": subject_id}
    assert_rejected(submit(client, site_a, record, "put"), [("subject_id", code)],
                    hidden=(subject_id,))


@pytest.mark.parametrize("subject_id", ["abc", "-TOR-abcdefg", "TOR abcdefgh", "TOR#abcdefgh",
                                        "x" * 65, "TOR-\u00e9ric-abc"])
def test_subject_id_of_another_form_is_refused(client, site_a, subject_id):
    record = {**EXAMPLE_RECORD, "subject_id": subject_id}
    assert_rejected(submit(client, site_a, record, "post"), [("subject_id", "invalid_format")],
                    hidden=(subject_id,))


def test_recommended_subject_ids_are_accepted(client, site_a):
    rng = random.Random(2012)
    key = bytes(rng.randrange(256) for _ in range(32))
    subject_ids = ["TOR-7f3a9c2e", _random_letters(rng, 16), _random_letters(rng, 64),
                   "TOR-" + _random_letters(rng, 20), _hmac_in_letters(key, "STUDY-0001")]
    for subject_id in subject_ids:
        response = submit(client, site_a, {**EXAMPLE_RECORD, "subject_id": subject_id}, "post")
        assert response.status_code == 201, response.json
    assert _stored_count(client, site_a) == len(subject_ids)


def test_recommended_forms_always_pass():
    """Random letters (16 to 64) and HMACs in letters never trip a rule (privacy.md)."""
    rng = random.Random(7)
    key = bytes(rng.randrange(256) for _ in range(32))
    for number in range(2000):
        check_subject_id(_random_letters(rng, rng.randint(16, 64)))
        hmac_id = _hmac_in_letters(key, f"STUDY-{number:05d}")
        assert len(hmac_id) == 64 and set(hmac_id) <= set("abcdefghijklmnop")
        check_subject_id(hmac_id)


@pytest.mark.parametrize("key, value", [
    ("version", 99), ("site", "MTL"), ("site_id", 2), ("derived", {"remission_days": 1}),
    ("created_at", "2020-01-01T00:00:00Z"), ("updated_at", "2020-01-01T00:00:00Z"),
    ("cell_key", 7), ("id", 1),
])
def test_registry_owned_keys_are_refused_and_nothing_is_stored(client, site_a, key, value):
    record = {**EXAMPLE_RECORD, key: value}
    assert_rejected(submit(client, site_a, record), [(key, "read_only_field")])
    assert _stored_count(client, site_a) == 0


def test_registry_owned_keys_cannot_change_a_stored_record(client, site_a):
    assert submit(client, site_a, dict(EXAMPLE_RECORD)).status_code == 201
    before = client.get("/api/v1/records/TOR-7f3a9c2e", headers=site_a).json
    record = changed(EXAMPLE_RECORD, {"version": 42, "site": "MTL", "age_at_met_dx": 61,
                                      "derived": {"remission_band": "10y_plus"},
                                      "created_at": "2001-01-01T00:00:00Z"})
    assert_rejected(submit(client, site_a, record), [
        ("version", "read_only_field"), ("site", "read_only_field"),
        ("derived", "read_only_field"), ("created_at", "read_only_field")])
    assert client.get("/api/v1/records/TOR-7f3a9c2e", headers=site_a).json == before


def test_no_free_text_field():
    """Every field is a number in a range, a closed code, a list of codes, or the subject_id."""
    for name, field in RecordSchema().fields.items():
        assert isinstance(field, (Code, CodeList, WholeNumber, SubjectId)), name
        assert isinstance(field, SubjectId) == (name == "subject_id")


def test_refused_values_are_not_logged(client, site_a, caplog):
    caplog.set_level(logging.DEBUG)
    record = {**EXAMPLE_RECORD, "subject_id": "TOR-416-555-0199", "patient_name": SECRET,
              "notes": SECRET, "sex": "2012-05-01", "age_at_met_dx": 91}
    assert submit(client, site_a, record, "post").status_code == 422
    accepted = {**EXAMPLE_RECORD, "subject_id": "TOR-zqloggedornot"}
    assert submit(client, site_a, accepted, "post").status_code == 201
    for value in (SECRET, "416-555-0199", "2012-05-01", "zqloggedornot"):
        assert value not in caplog.text


def test_a_site_sees_its_own_records_only(client, site_a, site_b, coordinator, steward):
    assert submit(client, site_a, dict(EXAMPLE_RECORD)).status_code == 201
    subject_id = EXAMPLE_RECORD["subject_id"]
    assert client.get(f"/api/v1/records/{subject_id}", headers=site_b).status_code == 404
    assert client.get("/api/v1/records", headers=site_b).json["records"] == []
    for headers in (coordinator, steward):
        assert client.get(f"/api/v1/records/{subject_id}", headers=headers).status_code == 403
        assert client.get("/api/v1/records", headers=headers).status_code == 403


def test_withdrawal_erases_the_record_and_keeps_it_out(client, site_a):
    subject_id = EXAMPLE_RECORD["subject_id"]
    assert submit(client, site_a, dict(EXAMPLE_RECORD)).status_code == 201
    assert submit(client, site_a, {**EXAMPLE_RECORD, "age_at_met_dx": 53}).status_code == 200
    assert client.delete(f"/api/v1/records/{subject_id}", headers=site_a).status_code == 204
    assert client.get(f"/api/v1/records/{subject_id}", headers=site_a).status_code == 404
    assert client.get(f"/api/v1/records/{subject_id}/history",
                      headers=site_a).status_code == 404
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(RecordVersion)) == 0
        assert session.scalar(select(func.count()).select_from(Tombstone)) == 1
    again = submit(client, site_a, dict(EXAMPLE_RECORD))
    assert again.status_code == 409 and again.json["code"] == "subject_withdrawn"
