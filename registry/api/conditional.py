"""Conditional request headers (If-Match, If-None-Match; RFC 9110 section 13.1), read by one
tolerant parser.

A header that is not a list of entity tags (or `*`) is a 400 naming the header, never a 500,
whatever it holds (5,000 digits, bytes outside ASCII, an empty value). A well-formed tag that
names no version of the record simply does not match: a 412 for a write, a fresh answer for a
read. Tags are compared weakly (`W/"3"` is `"3"`): the tag is the record's version, and a
proxy that compresses answers weakens the tags it passes on. The value is never repeated.
"""

from __future__ import annotations

import re

from registry.errors import BadRequest
from registry.services.intake.records import VersionCondition

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E (ASCII only here).
_TAG = r'\s*(?:W/)?"[\x21\x23-\x7e]*"\s*'
_TAG_LIST = re.compile(rf"{_TAG}(?:,{_TAG})*")
_TAG_VALUE = re.compile(r'"([\x21\x23-\x7e]*)"')
# The registry's tags: a version number, as the ETag of every record answer says.
_VERSION = re.compile(r"[1-9][0-9]{0,8}")


def version_condition(header: str, value: str | None) -> VersionCondition | None:
    """The versions a conditional header names (None when it was not sent); 400 if malformed."""
    if value is None:
        return None
    if value.strip() == "*":
        return VersionCondition(any_version=True)
    if not _TAG_LIST.fullmatch(value):
        raise BadRequest(f"{header} must be * or entity tags, e.g. \"3\"", errors=[{
            "field": header, "code": "invalid_format",
            "message": 'a version in quotes as the ETag gives it, e.g. "3", a list of them, or *'}])
    versions = {int(tag) for tag in _TAG_VALUE.findall(value) if _VERSION.fullmatch(tag)}
    return VersionCondition(versions=frozenset(versions))
