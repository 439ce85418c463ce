"""The identifier firewall of privacy.md section 1: what an identifier looks like.

Every check answers with the kind of identifier it saw, never with the value.
"""

from __future__ import annotations

import re

_ALONE_L, _ALONE_R = r"(?<!\d)(?<!\d[-/.])", r"(?![-/.]?\d)"
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
_DATE_SHAPES = [
    # Numeric dates stand alone, not inside a longer run of digit groups (123-45-6789, 10.1.2.30).
    re.compile(_ALONE_L + r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}" + _ALONE_R),  # 2012-05-01, 2012/5/1
    re.compile(_ALONE_L + r"\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}" + _ALONE_R),  # 01/05/2012, 5-1-12
    re.compile(rf"\d{{1,2}}[-/. ]?{_MONTH}[-/., ]*\d{{2,4}}", re.I),  # 1 May 2012, 01-may-12
    re.compile(rf"{_MONTH}[-/. ]{{0,2}}\d{{1,2}}(?:st|nd|rd|th)?,?[-/. ]\d{{2,4}}",
               re.I),  # May 1, 2012; Sept. 3, 2012
    re.compile(r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)"),  # 20120501
    # Month and year alone are a date element too (HIPAA Safe Harbor keeps only the year).
    re.compile(r"(?<!\d)(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])(?![A-Za-z0-9])"),  # 2012-05
    re.compile(r"(?<!\d)(?:0?[1-9]|1[0-2])[-/.](?:19|20)\d{2}(?![A-Za-z0-9])"),  # 05/2012
    re.compile(r"(?<![a-z])(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]{0,6}\.?"
               r"[-/., ]{0,2}(?:19|20)\d{2}(?!\d)", re.I),  # May 2012, Sept. 2012
]

# Identifier shapes a subject_id must not hold, each with the words an error uses for it.
# "(?<![A-Za-z0-9])...(?![A-Za-z0-9])" keeps a shape from matching inside a longer random run.
_EDGE_L, _EDGE_R = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"
# The specific shapes come first so that an error names what was seen (a phone, not digits).
_IDENTIFIER_SHAPES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"@|[A-Za-z0-9._%+-]+\s*(?:\(at\)|\[at\])\s*[A-Za-z0-9.-]+"), "an e-mail address"),
    (re.compile(r"\d{1,3}(?:\.\d{1,3}){3}"), "an IP address"),
    (re.compile(r"(?:https?|ftp)[:_.-]|www\.|[A-Za-z0-9-]+\.(?:com|org|net|edu|gov|ca|us|uk|io|info)"
                + _EDGE_R, re.I), "a URL"),
    (re.compile(r"\+?\(?\d{3}\)?[-. ]?\d{3}[-. ]\d{4}|\+\d{1,3}[-. ]?\d"), "a phone number"),
    (re.compile(r"\d{4}[- ]\d{3}[- ]\d{3}"), "a 10-digit health-card number"),
    (re.compile(r"\d{3}[- ]\d{3}[- ]\d{3}|\d{3}-\d{2}-\d{4}"), "a SIN or SSN"),
    (re.compile(r"\d{5}-\d{4}"), "a ZIP+4 code"),
    (re.compile(_EDGE_L + r"[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z][ -]?\d[ABCEGHJ-NPRSTV-Z]\d"
                + _EDGE_R, re.I), "a Canadian postal code"),
    (re.compile(r"\d{6,}"), "a run of 6 or more digits"),
]

# Words in a field name that announce an identifier. Short ones must be a whole word of the name;
# long ones are looked for anywhere in it ("patientname", "dateOfBirth").
_SHORT_WORDS = frozenset({
    "mrn", "chart", "dob", "hcn", "ohip", "sin", "ssn", "fax", "zip", "city", "ip", "url", "name",
    "names", "postal", "email", "phone", "address", "birth", "tel",
})
_LONG_WORDS = (
    "name", "birth", "healthcard", "email", "phone", "address", "postal", "zipcode", "telephone",
    "ohip", "chartnumber", "medicalrecord", "socialinsurance", "socialsecurity", "postcode",
    "website",
)
_SAFE_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def looks_like_date(text: str) -> bool:
    """Whether a string is shaped like a calendar date."""
    return any(pattern.search(text) for pattern in _DATE_SHAPES)


def identifier_kind(text: str) -> str | None:
    """The kind of identifier `text` holds (e.g. 'a phone number'), or None."""
    for pattern, kind in _IDENTIFIER_SHAPES:
        if pattern.search(text):
            return kind
    return None


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def is_identifier_field_name(name: str) -> bool:
    """Whether a field name suggests it carries an identifier (privacy.md section 1)."""
    words = _name_words(name)
    if any(word in _SHORT_WORDS for word in words):
        return True
    compact = "".join(words)
    return any(word in compact for word in _LONG_WORDS)


def printable_field_name(name: object) -> str:
    """A submitted field name fit to appear in an error: itself if plain, else a placeholder."""
    if isinstance(name, str) and _SAFE_FIELD_NAME.match(name) and not looks_like_date(name) \
            and identifier_kind(name) is None:
        return name
    return "(unnamed field)"
