"""marshmallow fields of the record: strict types, coded errors, and no value ever echoed.

Each error message is a `Problem`: a string (so marshmallow, webargs and apispec handle it as
usual) that also carries a stable machine-readable `code`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from marshmallow import ValidationError, fields

from registry.core.identifiers import identifier_kind, looks_like_date


class Problem(str):
    """An error message with a stable code, e.g. Problem('out_of_range', 'must be 18 to 90')."""

    code: str

    def __new__(cls, code: str, message: str) -> Problem:
        problem = super().__new__(cls, message)
        problem.code = code
        return problem

    def __getnewargs__(self) -> tuple[str, str]:  # copy and pickle keep the code
        return self.code, str(self)


def problems_to_list(messages: Any, field: str | None = None) -> list[dict[str, str]]:
    """Flatten marshmallow's nested error messages into [{field, code, message}, ...]."""
    if isinstance(messages, Mapping):
        found: list[dict[str, str]] = []
        for key, value in messages.items():
            if key == "_schema":
                name = field or "(body)"
            elif isinstance(key, int):  # an index inside a list field: report the list
                name = field or "(body)"
            else:
                name = f"{field}.{key}" if field else str(key)
            found.extend(problems_to_list(value, name))
        return found
    if isinstance(messages, (list, tuple)):
        return [item for message in messages for item in problems_to_list(message, field)]
    code = getattr(messages, "code", "invalid")
    return [{"field": field or "(body)", "code": code, "message": str(messages)}]


_MISSING_MESSAGES = {
    "required": Problem("required", "is required"),
    "null": Problem("required", "is required and may not be null"),
}


class _CodedField(fields.Field):
    """Mixin: every error of the field is a Problem; the base's messages never show."""

    def make_error(self, key: str, **kwargs: Any) -> ValidationError:
        if key in _MISSING_MESSAGES:
            return ValidationError(_MISSING_MESSAGES[key])
        return ValidationError(Problem("invalid_type", "has the wrong type"))

    def _validate(self, value: Any) -> None:
        # The registry's fields check everything in _deserialize; skip marshmallow's empty chain.
        if self.validators:
            super()._validate(value)

    @staticmethod
    def fail(code: str, message: str) -> ValidationError:
        """The error to raise for a failed rule."""
        return ValidationError(Problem(code, message))

    def reject_string(self, value: str, expected: str) -> ValidationError:
        """The error for a string where `expected` was due: dates get their own code."""
        if looks_like_date(value):
            return self.fail("date_not_allowed", "calendar dates are not accepted; send days "
                                                 "from the metastatic diagnosis")
        return self.fail("invalid_type", f"must be {expected}")


class Code(_CodedField, fields.String):
    """One code of a closed list."""

    def __init__(self, choices: tuple[str, ...], **kwargs: Any) -> None:
        self.choices = choices
        metadata = {"enum": list(choices), **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.fail("invalid_type", "must be a string, one of the listed codes")
        if value not in self.choices:
            if looks_like_date(value):
                raise self.reject_string(value, "")
            raise self.fail("invalid_choice", "must be one of: " + ", ".join(self.choices))
        return value


class WholeNumber(_CodedField, fields.Integer):
    """A whole number in a range; `maximum` may be a function (e.g. the current year).

    `above_code` names the error for a value over the maximum when that has its own rule
    (ages over 89 must be sent as 90)."""

    def __init__(self, minimum: int, maximum: int | Callable[[], int], *,
                 above_code: str = "out_of_range", above_message: str | None = None,
                 **kwargs: Any) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.above_code = above_code
        self.above_message = above_message
        # The bounds are published in the OpenAPI spec; they are checked in _deserialize.
        bounds = {"minimum": minimum}
        if isinstance(maximum, int):
            bounds["maximum"] = maximum
        super().__init__(strict=True, metadata={**bounds, **kwargs.pop("metadata", {})}, **kwargs)

    def upper_bound(self) -> int:
        """The largest allowed value today."""
        return self.maximum() if callable(self.maximum) else self.maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str):
            raise self.reject_string(value, "a whole number")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail("invalid_type", "must be a whole number")
        high = self.upper_bound()
        if value > high and self.above_code != "out_of_range":
            raise self.fail(self.above_code, self.above_message or f"must be at most {high}")
        if not self.minimum <= value <= high:
            raise self.fail("out_of_range", f"must be a whole number from {self.minimum} to {high}")
        return value


class CodeList(_CodedField, fields.List):
    """A list of distinct codes of a closed list, stored in the order of the list."""

    def __init__(self, choices: tuple[str, ...], *, non_empty: bool = False,
                 **kwargs: Any) -> None:
        self.choices = choices
        self.non_empty = non_empty
        super().__init__(Code(choices), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, list):
            raise self.fail("invalid_type", "must be a list of codes")
        if self.non_empty and not value:
            raise self.fail("required", "must list at least one code")
        for item in value:
            if isinstance(item, str) and item in self.choices:
                continue
            if isinstance(item, str) and looks_like_date(item):
                raise self.reject_string(item, "")
            raise self.fail("invalid_choice",
                             "every item must be one of: " + ", ".join(self.choices))
        if len(set(value)) != len(value):
            raise self.fail("duplicate_item", "must not list a code twice")
        return [code for code in self.choices if code in value]


SUBJECT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{5,63}$")


class SubjectId(_CodedField, fields.String):
    """The site-chosen pseudonym of a patient (privacy.md section 1)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(metadata={"pattern": SUBJECT_ID_PATTERN.pattern,
                                   **kwargs.pop("metadata", {})}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        check_subject_id(value)
        return value


def check_subject_id(value: Any) -> None:
    """Raise a coded ValidationError unless `value` is an acceptable subject_id."""
    if not isinstance(value, str):
        raise _CodedField.fail("invalid_type", "must be a string")
    problem = _subject_id_problem(value)
    if problem is not None:
        raise ValidationError(problem)


def is_acceptable_subject_id(value: Any) -> bool:
    """Whether `value` could be a stored subject_id (else no query needs to look for it)."""
    return isinstance(value, str) and _subject_id_problem(value) is None


@lru_cache(maxsize=8192)
def _subject_id_problem(value: str) -> Problem | None:
    # Pure and asked twice per batch record (to name it in results, and to validate it).
    if looks_like_date(value):
        return Problem("date_not_allowed", "must not contain a date")
    kind = identifier_kind(value)
    if kind:
        return Problem(
            "identifier_like",
            f"looks like it holds {kind}; use a random pseudonym of 16 or more letters, or an "
            "HMAC written in letters only",
        )
    if not SUBJECT_ID_PATTERN.fullmatch(value):  # match() would let a final newline in
        return Problem(
            "invalid_format",
            "must be 6 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
        )
    return None
