"""The identifier firewall of privacy.md section 1: what an identifier looks like.

Every rule reads one normalised form of the text (`normalise`), never the raw text: lower case
without accents, any script's digits as ASCII digits, Cyrillic and Greek letters drawn like Latin
ones as those, each run of separators (every character that is neither a letter nor a digit, save
`@` and `+`: spaces, `.`, `_`, `-`, `~`, Unicode dashes and middle dots, invisible marks) one
space, a month name standing alone (English or French, abbreviated or not) written as its number
between spaces, and an ordinal suffix after a number dropped. So `046_454_286`, `046–454–286`,
`3_Mar_2019`, `2019March3` and `M5V.2T6` meet the rules as `046 454 286`, `3 03 2019`,
`2019 03 3` and `m5v 2t6` do. A letter run is a month only when no other letter
touches it, so random letters (the recommended pseudonyms) never hold a month, nor a digit.

Digit rules look at chains: digit groups joined by single separators. A chain of 6 or more
digits in all is refused whatever its grouping; the specific shapes only name what was seen.
Groups joined by single letters (`416x555x0199`) are read for the specific shapes and for dates
with a 4-digit year only: random hex holds the others by chance.
Pure Python (no Flask): the REDCap sync and the server share it. Every check answers with the
kind of identifier it saw, never with the value.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterator
from functools import lru_cache

# Every character that is neither a letter nor a digit separates, except `@` and `+`, which the
# e-mail and phone shapes read: ASCII punctuation (`~`, `*`, `#`, ...), and once non-ASCII text is
# folded (`_ascii`), Unicode dashes, dots, spaces and invisible marks alike.
_SEPARATORS = re.compile(r"[^a-z0-9@+\u0080-\U0010ffff]+")
_MONTH_NUMBERS = {
    **dict.fromkeys(("jan", "january", "janv", "janvier"), 1),
    **dict.fromkeys(("feb", "february", "fev", "fevr", "fevrier"), 2),
    **dict.fromkeys(("mar", "march", "mars"), 3),
    **dict.fromkeys(("apr", "april", "avr", "avril"), 4),
    **dict.fromkeys(("may", "mai"), 5),
    **dict.fromkeys(("jun", "june", "juin"), 6),
    **dict.fromkeys(("jul", "july", "juil", "juillet"), 7),
    **dict.fromkeys(("aug", "august", "aout"), 8),
    **dict.fromkeys(("sep", "sept", "september", "septembre"), 9),
    **dict.fromkeys(("oct", "october", "octobre"), 10),
    **dict.fromkeys(("nov", "november", "novembre"), 11),
    **dict.fromkeys(("dec", "december", "decembre"), 12),
}
_LETTER_RUN = re.compile(r"[a-z]+")
_MONTH_NAME = "|".join(sorted(_MONTH_NUMBERS, key=len, reverse=True))
# 3rd, 1er: dropped when a separator, the end or a month name (1stJan) follows.
_ORDINAL = re.compile(rf"(?<=[0-9])(?:st|nd|rd|th|er)(?=$|[^a-z0-9]|(?:{_MONTH_NAME})(?![a-z]))")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Letters of other scripts drawn like Latin ones (Cyrillic, Greek), read as the Latin letter, so
# that `М5V 2Т6` or `3 Мar 2019` in mixed scripts meets the rules as its Latin spelling does.
# (Capitals are folded to lower case first: Greek `Ν` and `Υ` are read as N and Y.)
_LOOK_ALIKES = str.maketrans("аеорсухіјѕԁһԛԝкмтвнαβεζηικμνοπρτυχ",
                             "aeopcyxijsdhqwkmtbhabezhikmnonptyx")
# Digit groups joined by exactly one separator; letters between two groups end the chain.
_CHAIN = re.compile(r"(?<![0-9])[0-9]+(?: [0-9]+)*(?![0-9])")
# The same, with a single letter as a joiner too: read only for the shapes that random letters
# and digits hold rarely by chance (see _LETTER_JOINED_SHAPES).
_LETTER_JOINED = re.compile(r"(?<![0-9])[0-9]+(?:[ a-z][0-9]+)+(?![0-9])")
_LETTER_OR_SPACE = re.compile(r"[ a-z]")


def _ascii(text: str) -> str:
    """Compatibility forms and accents folded (fullwidth ４ -> 4, é -> e), any script's digits
    written as ASCII digits, Cyrillic and Greek look-alikes as Latin letters, and any other
    character that is not a letter (dashes, middle dots, invisible marks) as a space."""
    folded = "".join(char for char in unicodedata.normalize("NFKD", text.lower())
                     if not unicodedata.combining(char)).translate(_LOOK_ALIKES)
    return _NON_ASCII.sub(_ascii_char, folded)


def _ascii_char(match: re.Match[str]) -> str:
    char = match.group()
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    return char if unicodedata.category(char).startswith("L") else " "


def _month_as_number(match: re.Match[str]) -> str:
    number = _MONTH_NUMBERS.get(match.group())
    return match.group() if number is None else f" {number:02d} "


# Texts are read in pieces of at most this many characters, overlapping by more than any shape
# spans, so that a long value (a 4 MB string where a code was due) costs linear time and bounded
# memory, and only short texts are cached.
_PIECE, _OVERLAP = 1024, 128


def _pieces(text: str) -> list[str]:
    if len(text) <= _PIECE:
        return [text]
    return [text[start:start + _PIECE] for start in range(0, len(text) - _OVERLAP,
                                                           _PIECE - _OVERLAP)]


def normalise(text: str) -> str:
    """The one form of a text that every identifier rule reads (see the module docstring)."""
    return _normalise_short(text) if len(text) <= _PIECE else _normalise(text)


@lru_cache(maxsize=4096)
def _normalise_short(text: str) -> str:
    return _normalise(text)


def _normalise(text: str) -> str:
    if not text.isascii():
        text = _ascii(text)
    text = text.lower()
    text = _ORDINAL.sub("", text)
    text = _LETTER_RUN.sub(_month_as_number, text)
    return _SEPARATORS.sub(" ", text).strip()


def _chains(normal: str) -> list[list[str]]:
    return [match.group().split(" ") for match in _CHAIN.finditer(normal)]


def _letter_joined_chains(normal: str) -> list[list[str]]:
    """Digit groups joined by single letters too (`416x555x0199`, `1950x03x03`)."""
    return [_LETTER_OR_SPACE.split(match.group()) for match in _LETTER_JOINED.finditer(normal)
            if not match.group().replace(" ", "").isdigit()]


def _windows(groups: list[str], size: int) -> Iterator[tuple[str, ...]]:
    return (tuple(groups[start:start + size]) for start in range(len(groups) - size + 1))


# --- dates -------------------------------------------------------------------------------------

def _day(group: str) -> bool:
    return len(group) <= 2 and 1 <= int(group) <= 31


def _month(group: str) -> bool:
    return len(group) <= 2 and 1 <= int(group) <= 12


def _year4(group: str) -> bool:
    return len(group) == 4 and 1900 <= int(group) <= 2099


def _year(group: str) -> bool:  # a 4-digit year, or any 2 digits
    return _year4(group) or len(group) == 2


def _three_part_date(first: str, middle: str, last: str) -> bool:
    """Day, month and year in any order people write them."""
    return (
        (_year4(first) and ((_month(middle) and _day(last)) or (_day(middle) and _month(last))))
        or (_year(last) and ((_day(first) and _month(middle)) or (_month(first) and _day(middle))))
        or (len(first) == 2 and _month(middle) and _day(last))
    )


def _compact_date(group: str) -> bool:
    """20120501, 01052012 or 05012012."""
    if len(group) != 8:
        return False
    return (_year4(group[:4]) and _month(group[4:6]) and _day(group[6:])) or (
        _year4(group[4:]) and ((_day(group[:2]) and _month(group[2:4]))
                               or (_month(group[:2]) and _day(group[2:4]))))


def _chain_has_date(groups: list[str]) -> bool:
    if any(_compact_date(group) for group in groups):
        return True
    if any(_three_part_date(*window) for window in _windows(groups, 3)):
        return True
    # Month and year alone are a date element too (HIPAA Safe Harbor keeps only the year).
    return any((_year4(first) and _month(second)) or (_month(first) and _year4(second))
               for first, second in _windows(groups, 2))


def looks_like_date(text: str) -> bool:
    """Whether a string holds a calendar date (or a month and year), in any spelling."""
    return any(_piece_has_date(piece) for piece in _pieces(text))


def _year_first_or_last(first: str, middle: str, last: str) -> bool:
    """A three-part date with a 4-digit year: what single letters may join (1950x03x03)."""
    return (_year4(first) and ((_month(middle) and _day(last)) or (_day(middle) and _month(last)))
            ) or (_year4(last) and ((_day(first) and _month(middle))
                                    or (_month(first) and _day(middle))))


@lru_cache(maxsize=4096)
def _piece_has_date(piece: str) -> bool:
    normal = normalise(piece)
    return any(_chain_has_date(groups) for groups in _chains(normal)) or any(
        _year_first_or_last(*window) for groups in _letter_joined_chains(normal)
        for window in _windows(groups, 3))


# --- identifiers -------------------------------------------------------------------------------

def _has_run(groups: list[str], lengths: tuple[int, ...]) -> bool:
    return any(tuple(map(len, window)) == lengths for window in _windows(groups, len(lengths)))


def _is_ip(groups: list[str]) -> bool:
    return any(all(len(group) <= 3 and int(group) <= 255 for group in window)
               for window in _windows(groups, 4))


# Shapes of a digit chain, each with the words an error uses for it; the specific ones first so
# that an error names what was seen (a phone, not digits). All of them hold 6+ digits.
_CHAIN_SHAPES: list[tuple[str, object]] = [
    ("an IP address", _is_ip),
    ("a phone number", lambda groups: _has_run(groups, (3, 3, 4))
     or _has_run(groups, (1, 3, 3, 4))),
    ("a 10-digit health-card number", lambda groups: _has_run(groups, (4, 3, 3))),
    ("a SIN or SSN", lambda groups: _has_run(groups, (3, 3, 3)) or _has_run(groups, (3, 2, 4))),
    ("a ZIP+4 code", lambda groups: _has_run(groups, (5, 4))),
    ("a run of 6 or more digits (with or without separators)",
     lambda groups: sum(map(len, groups)) >= 6),
]
# Joined by single letters, a chain is read for the specific shapes only: a hex string or a
# UUID holds 6 digits or an IP address's small numbers between letters by chance, and rarely
# one of these.
_LETTER_JOINED_SHAPES = _CHAIN_SHAPES[1:5]
_TEXT_SHAPES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"@|[a-z0-9] at [a-z0-9]"), "an e-mail address"),
    (re.compile(r"(?:^| )(?:https?|ftp|www)(?: |$)|[a-z0-9] (?:com|org|net|edu|gov)(?: |$)"
                r"|[a-z0-9] (?:ca|us|uk|io|info)$"), "a URL"),
    (re.compile(r"\+ ?[0-9]"), "a phone number"),
    (re.compile(r"(?<![a-z0-9])[abceghj-nprstvxy][0-9][abceghj-nprstv-z] ?[0-9]"
                r"[abceghj-nprstv-z][0-9](?![a-z0-9])"), "a Canadian postal code"),
]


def identifier_kind(text: str) -> str | None:
    """The kind of identifier `text` holds (e.g. 'a phone number'), or None."""
    for piece in _pieces(text):
        kind = _piece_identifier_kind(piece)
        if kind is not None:
            return kind
    return None


@lru_cache(maxsize=4096)
def _piece_identifier_kind(piece: str) -> str | None:
    normal = normalise(piece)
    for pattern, kind in _TEXT_SHAPES:
        if pattern.search(normal):
            return kind
    for shapes, chains in ((_CHAIN_SHAPES, _chains(normal)),
                           (_LETTER_JOINED_SHAPES, _letter_joined_chains(normal))):
        for kind, shape in shapes:
            if any(shape(groups) for groups in chains):  # type: ignore[operator]
                return kind
    return None


def passes_firewall(text: str) -> bool:
    """Whether a text holds neither an identifier nor a date (privacy.md section 1)."""
    return identifier_kind(text) is None and not looks_like_date(text)


# --- field names -------------------------------------------------------------------------------

# Words in a field name that announce an identifier. Short ones must be a whole word of the name;
# long ones are looked for anywhere in it ("patientname", "dateOfBirth").
SHORT_NAME_WORDS = frozenset({
    "mrn", "chart", "dob", "hcn", "ohip", "sin", "ssn", "fax", "zip", "city", "ip", "url", "name",
    "names", "postal", "email", "phone", "address", "birth", "tel",
})
LONG_NAME_WORDS = (
    "name", "birth", "healthcard", "email", "phone", "address", "postal", "zipcode", "telephone",
    "ohip", "chartnumber", "medicalrecord", "socialinsurance", "socialsecurity", "postcode",
    "website",
)
_SAFE_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def is_identifier_field_name(name: str) -> bool:
    """Whether a field name suggests it carries an identifier (privacy.md section 1)."""
    words = _name_words(name)
    if any(word in SHORT_NAME_WORDS for word in words):
        return True
    compact = "".join(words)
    return any(word in compact for word in LONG_NAME_WORDS)


def printable_field_name(name: object, own: Collection[str] = ()) -> str:
    """A submitted field name fit to appear in an error: itself if it is one of the registry's
    `own` names (an age field reads like an e-mail, `age at met`, yet is the registry's word) or
    plain, else a placeholder."""
    if isinstance(name, str) and (name in own or (
            _SAFE_FIELD_NAME.match(name) and passes_firewall(name))):
        return name
    return "(unnamed field)"
