"""The rules of record.md that relate fields to each other, declared once.

`RULES` drives three things, so they cannot drift apart:
- validation (`check_conditional_rules`, called by the record schema);
- the rule text the published dictionary and the spreadsheet template show (`rule_texts`);
- the REDCap branching logic of the site's data dictionary (`branching`): a field that belongs
  only to some records (`OnlyWhen`) is shown only for them.

A rule is checked only when the fields it reads are valid: a wrong value is reported once, by
the field's own check. Messages name fields and codes of the dictionary, never a sent value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from registry.core.fields import Problem


Naming = Callable[[str], str]


class Values:
    """What a rule sees of a record: valid values (`data`) and what was sent (`original`)."""

    def __init__(self, data: dict[str, Any], original: dict[str, Any]) -> None:
        self.data = data
        self.original = original

    def given(self, field: str) -> bool:
        """Sent, whether valid or not."""
        return self.original.get(field) is not None

    def valid(self, *fields: str) -> bool:
        """Every field sent and valid."""
        return all(self.data.get(field) is not None for field in fields)


@dataclass(frozen=True)
class Is:
    """A condition: `field` holds one of `values`."""

    field: str
    values: tuple[str, ...]

    def holds(self, record: Values) -> bool | None:
        """True or False, or None when the field is missing or invalid (cannot tell)."""
        value = record.data.get(self.field)
        return None if value is None else value in self.values

    def text(self, name: Naming = str, code: Naming = str) -> str:
        """The condition in words (fields and codes named by `name` and `code`)."""
        return f"{name(self.field)} is {' or '.join(map(code, self.values))}"

    def branching(self, name: Callable[[str], str], code: Callable[[str], str]) -> str:
        """The condition in REDCap's branching-logic syntax."""
        return " or ".join(f"[{name(self.field)}] = '{code(value)}'" for value in self.values)


@dataclass(frozen=True)
class AllOf:
    """A condition: every one of `conditions` holds."""

    conditions: tuple[Is, ...]

    def holds(self, record: Values) -> bool | None:
        """True or False, or None when one of the conditions cannot tell."""
        found = [condition.holds(record) for condition in self.conditions]
        return None if None in found else all(found)

    def text(self, name: Naming = str, code: Naming = str) -> str:
        """The condition in words."""
        return " and ".join(condition.text(name, code) for condition in self.conditions)

    def branching(self, name: Callable[[str], str], code: Callable[[str], str]) -> str:
        """The condition in REDCap's branching-logic syntax."""
        return " and ".join(f"({condition.branching(name, code)})"
                            for condition in self.conditions)


Condition = Union[Is, AllOf]


@dataclass(frozen=True)
class OnlyWhen:
    """`field` belongs only to records where `when` holds: it is asked (REDCap branching) and
    allowed only then, and required then, unless `required` is False or names a field that must
    also be given."""

    field: str
    when: Condition
    required: bool | str = True
    words: str = ""  # the rule in plain words, for the site's forms (no field names or codes)

    def check(self, record: Values, fail: Failure) -> None:
        """Report a field sent where it does not belong, or missing where it is required."""
        holds = self.when.holds(record)
        if holds is False and record.given(self.field):
            fail(self.field, "not_allowed_here", f"must be absent unless {self.when.text()}")
        elif holds and self.required and not record.given(self.field) and (
                self.required is True or record.given(self.required)):
            fail(self.field, "required", f"is required when {self.required_text()}")

    def required_text(self, name: Naming = str, code: Naming = str) -> str:
        """When the field is required, in words."""
        if isinstance(self.required, str):
            return f"{self.when.text(name, code)} and {name(self.required)} is given"
        return self.when.text(name, code)

    def text(self, name: Naming = str, code: Naming = str) -> str:
        """The rule in words."""
        when = self.when.text(name, code)
        if not self.required:
            return f"only when {when}; absent otherwise"
        return f"required when {self.required_text(name, code)}; absent unless {when}"


@dataclass(frozen=True)
class RequiredWhen:
    """`field` is required when `when` holds (and may be given otherwise)."""

    field: str
    when: Condition
    words: str = ""  # the rule in plain words, for the site's forms (no field names or codes)

    def check(self, record: Values, fail: Failure) -> None:
        """Report the field missing where it is required."""
        if self.when.holds(record) and not record.given(self.field):
            fail(self.field, "required", f"is required when {self.when.text()}")

    def text(self, name: Naming = str, code: Naming = str) -> str:
        """The rule in words."""
        return f"required when {self.when.text(name, code)}"


@dataclass(frozen=True)
class MustBe:
    """`field` must be `value` when `when` holds."""

    field: str
    value: str
    when: Condition
    words: str = ""  # the rule in plain words, for the site's forms (no field names or codes)

    def check(self, record: Values, fail: Failure) -> None:
        """Report another valid value where only `value` is allowed."""
        if self.when.holds(record) and record.valid(self.field) \
                and record.data[self.field] != self.value:
            fail(self.field, "not_allowed_here", f"must be {self.value} when {self.when.text()}")

    def text(self, name: Naming = str, code: Naming = str) -> str:
        """The rule in words."""
        return f"must be {code(self.value)} when {self.when.text(name, code)}"


_ORDER_WORDS = {">": "after", ">=": "on or after", "<=": "not above"}


@dataclass(frozen=True)
class Order:
    """`field` compares to `other` (`>`, `>=` or `<=`) when both are valid."""

    field: str
    relation: str
    other: str
    code: str = "day_order"
    words: str = ""  # the rule in plain words, for the site's forms (no field names or codes)

    def check(self, record: Values, fail: Failure) -> None:
        """Report the two values in the wrong order."""
        if not record.valid(self.field, self.other):
            return
        mine, theirs = record.data[self.field], record.data[self.other]
        ok = {">": mine > theirs, ">=": mine >= theirs, "<=": mine <= theirs}[self.relation]
        if not ok:
            fail(self.field, self.code, f"must be {_ORDER_WORDS[self.relation]} {self.other}")

    def text(self, name: Naming = str, code: Naming = str) -> str:
        """The rule in words."""
        return f"{_ORDER_WORDS[self.relation]} {name(self.other)}"


Rule = Union[OnlyWhen, RequiredWhen, MustBe, Order]
Failure = Callable[[str, str, str], None]

_MAINTENANCE_STOPPED = Is("maintenance_status", ("discontinued", "interrupted_resumed"))
# The conditional rules of record.md, in the order of the record.
RULES: tuple[Rule, ...] = (
    OnlyWhen("primary_dx_day", Is("presentation", ("recurrent",)),
             words="Required for recurrent disease; leave blank for de novo disease"),
    MustBe("prior_adjuvant_trastuzumab", "no", Is("presentation", ("de_novo",)),
           words="No for de novo disease"),
    OnlyWhen("primary_tumour_surgery", Is("presentation", ("de_novo",)), required=False,
             words="Only for de novo disease"),
    MustBe("endocrine_maintenance", "not_applicable",
           AllOf((Is("er_status", ("negative",)), Is("pr_status", ("negative",)))),
           words="Not applicable when ER and PR are both negative"),
    Order("remission_start_day", ">=", "trastuzumab_start_day",
          words="On or after the start of trastuzumab"),
    OnlyWhen("trastuzumab_stop_day", _MAINTENANCE_STOPPED,
             words="Required when maintenance was discontinued, or interrupted and resumed; "
                   "leave blank while it is ongoing"),
    Order("trastuzumab_stop_day", ">", "trastuzumab_start_day",
          words="After the start of trastuzumab"),
    OnlyWhen("discontinuation_reason", _MAINTENANCE_STOPPED, required="trastuzumab_stop_day",
             words="Required when a trastuzumab stop date is given; leave blank while "
                   "maintenance is ongoing"),
    OnlyWhen("trastuzumab_resume_day", Is("maintenance_status", ("interrupted_resumed",)),
             words="Required when maintenance was interrupted and resumed; leave blank "
                   "otherwise"),
    Order("trastuzumab_resume_day", ">", "trastuzumab_stop_day", words="After the stop"),
    Order("lvef_nadir_pct", "<=", "lvef_baseline_pct", code="out_of_range",
          words="Not above the baseline LVEF"),
    Order("progression_day", ">", "remission_start_day", words="After the remission started"),
    RequiredWhen("progression_day", Is("disease_status_last", ("progressing",)),
                 words="Required when the disease status at the last follow-up is "
                       "progressing"),
    OnlyWhen("cause_of_death", Is("vital_status", ("dead",)),
             words="Required when the patient has died; leave blank while alive"),
)


def check_conditional_rules(data: dict[str, Any], original: dict[str, Any]
                            ) -> dict[str, list[Problem]]:
    """The problems the rule table finds in a record: field -> problems."""
    errors: dict[str, list[Problem]] = {}

    def fail(field: str, code: str, message: str) -> None:
        errors.setdefault(field, []).append(Problem(code, message))

    record = Values(data, original)
    for rule in RULES:
        rule.check(record, fail)
    return errors


def rule_texts(field: str, name: Naming = str, code: Naming = str) -> list[str]:
    """Every rule of the table about `field`, in words; `name` and `code` give the names of
    fields and codes (the site's REDCap names, for the REDCap dictionary and the template)."""
    return [rule.text(name, code) for rule in RULES if rule.field == field]


def plain_words(field: str) -> str:
    """The rules about a field as the site's forms say them (REDCap field notes)."""
    return "; ".join(rule.words for rule in RULES if rule.field == field and rule.words)


def required_when(field: str) -> str | None:
    """When a conditional field is required or allowed, in words (None: not conditional)."""
    texts = [rule.text() for rule in RULES if rule.field == field
             and isinstance(rule, (OnlyWhen, RequiredWhen))]
    return "; ".join(texts) or None


def shown_when(field: str) -> Condition | None:
    """The condition under which a field belongs to a record (None: always)."""
    for rule in RULES:
        if isinstance(rule, OnlyWhen) and rule.field == field:
            return rule.when
    return None


def branching(field: str, name: Callable[[str], str], code: Callable[[str], str]) -> str:
    """REDCap branching logic of a field: shown only when it belongs to the record."""
    condition = shown_when(field)
    return condition.branching(name, code) if condition is not None else ""
