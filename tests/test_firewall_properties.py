"""privacy.md section 1, by property: the identifier catalogue in every spelling is refused, and
the recommended pseudonyms always pass.

Hypothesis writes each shape of the catalogue (SIN, SSN, health card, phone, ZIP+4, postal code,
IP address, e-mail, URL, long digit runs, dates in any order with numeric, English or French month
names) with every separator the firewall normalises, or none, behind and before the prefixes
sites use; the firewall must name it identifier_like or date_not_allowed. The same firewall then
guards the record's other string positions and the request id.
"""

from __future__ import annotations

import hashlib
import hmac
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from conftest import EXAMPLE_RECORD
from registry.core import vocabulary as v
from registry.core.fields import Code, check_subject_id
from registry.core.identifiers import (
    identifier_kind, looks_like_date, normalise, passes_firewall,
)
from rejections import assert_rejected, submit

REFUSED = {"identifier_like", "date_not_allowed"}
SEPARATORS = ["", " ", ".", "_", "-", "/", "(", ")", "[", "]", "{", "\\", " - ", "__", ". ",
              ", ", ":", "~", "#", "*", "=",
              # Unicode dashes, dots, spaces and invisible marks: separators like any other.
              "\u2013", "\u2014", "\u2010", "\u2212", "\u00b7", "\u30fb", "\u2022", "\u00a0",
              "\u3000", "\u200b", "\u00ad", "\uff0f"]
# What sites put before a pseudonym; each ends in a separator so that a postal code or a month
# name keeps its own edges (glued into letters, they are indistinguishable from random letters).
DATE = list(SEPARATORS)
PREFIXES = ["", "SECA-", "TOR_", "site.", "ID ", "seca-04-", "X/"]
MONTH_NAMES = [
    ["jan", "January", "JANV", "janvier"], ["Feb", "february", "fevr", "février"],
    ["mar", "March", "mars"], ["apr", "April", "avr", "avril"], ["may", "May", "mai"],
    ["jun", "June", "juin"], ["jul", "July", "juil", "juillet"], ["aug", "August", "août"],
    ["sep", "Sept", "SEPTEMBER", "septembre"], ["oct", "October", "octobre"],
    ["nov", "November", "novembre"], ["dec", "December", "décembre", "Dec."],
]
ORDINALS = ["", "st", "nd", "rd", "th", "er"]
POSTAL_FIRST, POSTAL_OTHER = "ABCEGHJKLMNPRSTVXY", "ABCEGHJKLMNPRSTVWXYZ"

fuzz = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def digits(count: int) -> st.SearchStrategy[str]:
    """`count` decimal digits."""
    return st.text("0123456789", min_size=count, max_size=count)


@st.composite
def spelled(draw: st.DrawFn, parts: list[str], separators: list[str] = SEPARATORS) -> str:
    """The parts joined by separators drawn one by one (or none), behind a site's prefix."""
    text = parts[0]
    for before, part in zip(parts, parts[1:]):
        # Two numbers of a date glued together are another number: they keep a separator.
        glued_numbers = before.rstrip("stndrhe")[-1:].isdigit() and part[:1].isdigit() \
            and separators is DATE
        text += draw(st.sampled_from(separators[1:] if glued_numbers else separators)) + part
    return draw(st.sampled_from(PREFIXES)) + text + draw(st.sampled_from(["", "-AB", "_x"]))


@st.composite
def digit_shape(draw: st.DrawFn) -> str:
    """A SIN, SSN, health card, phone, ZIP+4, IP address or long run of digits."""
    lengths = draw(st.sampled_from([(3, 3, 3), (3, 2, 4), (4, 3, 3), (3, 3, 4), (1, 3, 3, 4),
                                    (5, 4), (2, 2, 2), (4, 4), (6,), (7,), (9,), (10,)]))
    return draw(spelled([draw(digits(length)) for length in lengths]))


@st.composite
def ip_address(draw: st.DrawFn) -> str:
    """An IPv4 address (its numbers apart: glued, they are a run of digits, or nothing)."""
    return draw(spelled([str(draw(st.integers(0, 255))) for _ in range(4)], SEPARATORS[1:]))


@st.composite
def postal_code(draw: st.DrawFn) -> str:
    """A Canadian postal code (A1A 1A1), any case."""
    letters = [draw(st.sampled_from(POSTAL_FIRST))] + [
        draw(st.sampled_from(POSTAL_OTHER)) for _ in range(2)]
    numbers = [str(draw(st.integers(0, 9))) for _ in range(3)]
    halves = [letters[0] + numbers[0] + letters[1], numbers[1] + letters[2] + numbers[2]]
    code = draw(st.sampled_from(PREFIXES[:-2])) + halves[0] + draw(
        st.sampled_from(["", " ", ".", "_", "-", "/"])) + halves[1]
    return draw(st.sampled_from([code, code.lower()]))


@st.composite
def date_spelling(draw: st.DrawFn) -> str:
    """A calendar date, or a month and year, written in any of the ways people write them."""
    year, month, day = draw(st.integers(1930, 2030)), draw(st.integers(1, 12)), \
        draw(st.integers(1, 28))
    name = draw(st.sampled_from(MONTH_NAMES[month - 1]))
    year_text = draw(st.sampled_from([str(year), f"{year % 100:02d}"]))
    day_text = draw(st.sampled_from([str(day), f"{day:02d}"])) + draw(st.sampled_from(ORDINALS))
    month_text = draw(st.sampled_from([str(month), f"{month:02d}"]))
    orders = [
        [str(year), month_text, day_text], [str(year), day_text, month_text],
        [day_text, month_text, year_text], [month_text, day_text, year_text],
        [day_text, name, year_text], [name, day_text, year_text], [str(year), name, day_text],
        [name, str(year)], [str(year), month_text], [month_text, str(year)],
    ]
    if draw(st.booleans()):
        compact = draw(st.sampled_from([f"{year}{month:02d}{day:02d}",
                                        f"{day:02d}{month:02d}{year}"]))
        return draw(st.sampled_from(PREFIXES)) + compact
    return draw(spelled(draw(st.sampled_from(orders)), DATE))


@st.composite
def contact_shape(draw: st.DrawFn) -> str:
    """An e-mail address or a URL."""
    word = draw(st.text(string.ascii_lowercase, min_size=2, max_size=8))
    host = draw(st.text(string.ascii_lowercase, min_size=2, max_size=8))
    tld = draw(st.sampled_from(["com", "org", "net", "ca", "edu", "gov", "info"]))
    forms = [f"{word}@{host}.{tld}", f"{word}(at){host}", f"{word} [at] {host}.{tld}",
             f"https://{host}.{tld}/{word}", f"http-{host}", f"www.{host}.{tld}",
             f"{host}.{tld}", f"{host}_{tld}"]
    return draw(st.sampled_from(PREFIXES)) + draw(st.sampled_from(forms))


# Digits of other scripts (full-width, Arabic-Indic, Devanagari, mathematical bold) and letters
# of Cyrillic and Greek drawn like Latin ones: a shape written in them is the same shape.
OTHER_DIGITS = ["\uff10", "\u0660", "\u0966", "\U0001d7ce"]
LOOK_ALIKES = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441",
               "x": "\u0445", "y": "\u0443", "M": "\u041c", "T": "\u0422", "B": "\u0412",
               "H": "\u041d", "K": "\u041a", "A": "\u0391", "E": "\u0395", "N": "\u039d",
               "O": "\u039f"}


@st.composite
def disguised(draw: st.DrawFn, shapes: st.SearchStrategy[str]) -> str:
    """A shape of the catalogue with some digits and letters written in other scripts."""
    text = draw(shapes)
    written = []
    for char in text:
        if char.isdigit() and char.isascii() and draw(st.booleans()):
            char = chr(ord(draw(st.sampled_from(OTHER_DIGITS))) + int(char))
        elif char in LOOK_ALIKES and draw(st.booleans()):
            char = LOOK_ALIKES[char]
        written.append(char)
    return "".join(written)


def firewall_code(value: str) -> str | None:
    """The code check_subject_id refuses `value` with, or None."""
    try:
        check_subject_id(value)
    except ValidationError as error:
        return error.messages[0].code
    return None


ISSUE_IDS = [
    "SMITH_JOHN_1950_03_03", "SECA-046_454_286", "SECA-046.454.286", "SECA-123_45_6789",
    "SECA-4876_532_901", "SECA-416_555_0199", "SECA-M5V_2T6", "SECA-192_168_1_10",
    "SECA-2019_03_03", "SECA-03_03_19", "SECA-3_Mar_2019", "SECA-2019March3",
    "Smith.John.1950-03-03", "SECA-046 454 286", "SECA-M5V.2T6",
]


@st.composite
def letter_joined(draw: st.DrawFn) -> str:
    """A phone, SIN, SSN, health card, ZIP+4 or date with a 4-digit year, its numbers joined by
    single letters (416x555x0199, 1950x03x03)."""
    if draw(st.booleans()):
        lengths = draw(st.sampled_from([(3, 3, 3), (3, 2, 4), (4, 3, 3), (3, 3, 4),
                                        (1, 3, 3, 4), (5, 4)]))
        groups = [draw(digits(length)) for length in lengths]
    else:
        year, month, day = str(draw(st.integers(1930, 2030))), draw(st.integers(1, 12)), \
            draw(st.integers(1, 28))
        month_text = draw(st.sampled_from([str(month), f"{month:02d}"]))
        day_text = draw(st.sampled_from([str(day), f"{day:02d}"]))
        groups = draw(st.sampled_from([[year, month_text, day_text], [year, day_text, month_text],
                                       [day_text, month_text, year], [month_text, day_text, year]]))
    joiners = st.sampled_from(string.ascii_letters)
    return draw(st.sampled_from(PREFIXES)) + groups[0] + "".join(
        draw(joiners) + group for group in groups[1:])


CATALOGUE = st.one_of(digit_shape(), ip_address(), postal_code(), date_spelling(),
                      contact_shape(), letter_joined())


def _with_issue_examples(test):  # noqa: ANN001, ANN202
    for value in ISSUE_IDS + ["SECA-4876 532 901-XY", "seca-m5v.2t6", "SECA-416x555x0199",
                              "SECA-1950x03x03"]:
        test = example(value)(test)
    return test


@fuzz
@given(value=CATALOGUE)
@_with_issue_examples
def test_every_spelling_of_the_catalogue_is_refused(value):
    assert firewall_code(value) in REFUSED, (value, normalise(value))
    assert not passes_firewall(value)


@fuzz
@given(value=disguised(CATALOGUE))
@example("SECA-\u041c5V_2\u04226")  # Cyrillic M and T
@example("SECA-3_M\u0430r_2019")  # Cyrillic a
@example("SECA-046\u2013454\u2013286")  # en dashes
@example("SECA-\u0966\u096a\u096c 454 286")  # Devanagari digits
def test_the_catalogue_in_other_scripts_is_refused(value):
    assert firewall_code(value) in REFUSED, (value, normalise(value))


@fuzz
@given(value=date_spelling())
def test_a_date_in_any_spelling_is_a_date_in_every_string_position(value):
    assert looks_like_date(value), (value, normalise(value))
    with pytest.raises(ValidationError) as refused:
        Code(v.SEX).deserialize(value)
    assert refused.value.messages[0].code == "date_not_allowed"


@fuzz
@given(letters=st.text(string.ascii_letters, min_size=16, max_size=59),
       prefix=st.sampled_from(["", "TOR-", "SECA_", "mtl."]))
def test_random_letters_always_pass(letters, prefix):
    assert firewall_code(prefix + letters) is None


@fuzz
@given(key=st.binary(min_size=16, max_size=64), study_id=st.text(min_size=1, max_size=40))
def test_an_hmac_in_letters_always_passes(key, study_id):
    """The REDCap sync's pseudonym: HMAC-SHA256, each 4 bits written as one of a..p."""
    digest = hmac.new(key, study_id.encode(), hashlib.sha256).hexdigest()
    pseudonym = digest.translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))
    assert firewall_code(pseudonym) is None and identifier_kind(pseudonym) is None


@fuzz
@given(prefix=st.from_regex(r"[A-Za-z]{0,24}[-_.]?", fullmatch=True),
       record_id=st.text(min_size=1, max_size=20), secret=st.text(min_size=32, max_size=40))
@example(prefix="www-", record_id="1", secret="s" * 32)
@example(prefix="http_", record_id="1", secret="s" * 32)
@example(prefix="_", record_id="1", secret="s" * 32)
@example(prefix="TOR-", record_id="1", secret="s" * 32)
def test_every_pseudonym_of_the_redcap_sync_passes(prefix, record_id, secret):
    """Whatever prefix the sync's configuration accepts, its HMAC pseudonyms pass."""
    from registry.core.deidentify import subject_id
    from registry.site.redcap.config import ConfigError, load_config

    environ = {"REDCAP_API_URL": "http://127.0.0.1:1/api/", "REDCAP_API_TOKEN": "A" * 32,
               "REGISTRY_URL": "http://127.0.0.1:2", "REGISTRY_TOKEN": "t",
               "REGISTRY_SITE_SECRET": "s" * 32}
    try:
        load_config(None, environ=environ, subject_prefix=prefix)
    except ConfigError as refused:
        assert "subject_prefix" in str(refused)
        return
    assert firewall_code(subject_id(secret, record_id, prefix)) is None


def test_normalisation_is_one_form_for_every_spelling():
    for spelling in ("046_454_286", "046.454.286", "046 454 286", "(046) [454] 286",
                     "046-454/286", "０４６ ４５４ ２８６"):
        assert normalise(spelling) == "046 454 286"
    for spelling in ("3_Mar_2019", "3 March 2019", "3rd-mar-2019", "3 mars 2019",
                     "3.MAR.2019"):
        assert normalise(spelling) == "3 03 2019"
    assert normalise("2019March3") == "2019 03 3"
    assert normalise("M5V.2T6") == normalise("m5v 2t6") == "m5v 2t6"
    assert normalise("Marchetti-abc") == "marchetti abc"  # a month inside a word stays a word


@pytest.mark.parametrize("subject_id", ISSUE_IDS)
@pytest.mark.parametrize("via", ["put", "post", "batch"])
def test_the_ids_that_passed_the_old_firewall_are_refused(client, site_a, subject_id, via):
    record = {**EXAMPLE_RECORD, "subject_id": subject_id}
    if via == "batch":
        answer = client.post("/api/v1/records/batch", json={"records": [record]},
                             headers=site_a)
        result = answer.json["results"][0]
        assert result["outcome"] == "rejected" and result["subject_id"] is None
        assert {error["code"] for error in result["errors"]} <= REFUSED
        assert subject_id not in answer.get_data(as_text=True)
    else:
        errors = assert_rejected(submit(client, site_a, record, via),
                                 [("subject_id", firewall_code(subject_id))],
                                 hidden=(subject_id,))
        assert errors[0]["code"] in REFUSED
    assert client.get("/api/v1/records", headers=site_a).json["records"] == []


def test_a_long_text_is_read_whole_in_bounded_pieces():
    """A shape is found wherever it sits in a long value (pieces overlap), in linear time."""
    for filler in ("x" * 5000, "ab " * 2000):
        for shape, check in (("2019-03-03", looks_like_date),
                             ("416_555_0199", identifier_kind), ("SECA-M5V_2T6", identifier_kind)):
            for position in range(0, len(filler), 997):
                assert check(filler[:position] + " " + shape + " " + filler[position:]), \
                    (shape, position)
    assert not looks_like_date("x" * 4_000_000) and identifier_kind("x" * 4_000_000) is None
