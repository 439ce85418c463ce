"""JSON request bodies read strictly: an object that names a key twice is refused.

JSON parsers settle a repeated key differently (Python keeps the last value, others the first),
so a record naming an age twice, 95 then 50, is ambiguous; a clinical record must not be.
The API's parser and the console's JSON endpoints both read bodies here.
"""

from __future__ import annotations

import json
from typing import Any

from registry.core.identifiers import printable_field_name
from registry.core.record import RECORD_KEYS
from registry.errors import BadRequest


class DuplicateKey(ValueError):
    """A JSON object that names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__("duplicate key")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: the object as a dict, unless a key repeats."""
    built = dict(pairs)
    if len(built) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return built


def load_json_body(data: bytes | str) -> Any:
    """A JSON body; 400 duplicate_key when an object names a key twice, naming the key (the
    registry's own names as they are, another only when plain), never its values. Malformed JSON
    raises ValueError or RecursionError, for the caller to answer."""
    try:
        return json.loads(data, object_pairs_hook=unique_keys)
    except DuplicateKey as duplicate:
        name = printable_field_name(duplicate.key, RECORD_KEYS | {"records"})
        raise BadRequest("the body names a key more than once; send each key once",
                         errors=[{"field": name, "code": "duplicate_key",
                                  "message": "appears more than once in one JSON object"}]
                         ) from None
