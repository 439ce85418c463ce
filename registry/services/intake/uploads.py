"""The console's upload page: what a browser needs to convert a spreadsheet at the site.

The page de-identifies in the browser; the server gives it the description of the site-side
fields (core/site_fields.py) and checks the de-identified records with the registry's rules,
exactly as registry-submit checks them locally before its dry run, so that both send the same
batches. Writing goes through services/intake/batches.py like the API's batches.
"""

from __future__ import annotations

from typing import Any

from registry.core.record import validate_record
from registry.core.site_fields import site_fields_description
from registry.core.template import template_xlsx
from registry.errors import PayloadTooLarge
from registry.permissions import Action, authorize
from registry.services.access.tokens import Caller


def describe_site_fields(caller: Caller, max_batch: int) -> dict[str, Any]:
    """The site-side fields and the edge de-identification's rules, for a converter."""
    authorize(caller.role, Action.READ_DICTIONARY)
    return site_fields_description(max_batch)


def check_records(caller: Caller, records: list[Any], max_batch: int) -> list[list[dict[str, str]]]:
    """Each de-identified record's problems under the registry's rules ([] when valid), as
    registry-submit's local check finds them; nothing is stored or compared."""
    authorize(caller.role, Action.WRITE_RECORDS)
    if len(records) > max_batch:
        raise PayloadTooLarge(f"a check holds at most {max_batch} records; split it")
    return [validate_record(record)[1] for record in records]


def template_file(caller: Caller) -> bytes:
    """The registry's empty spreadsheet template (.xlsx), as the API serves it."""
    authorize(caller.role, Action.READ_DICTIONARY)
    return template_xlsx()
