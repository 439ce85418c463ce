"""One table: which roles may do what. Services check it; the API's decorators read it.

A role is named here and in registry/core/vocabulary.py only: endpoints declare the action they
perform (`@requires(Action.WRITE_RECORDS)`), and the service behind them checks the caller
against the same row, so a rule cannot differ between the HTTP check and the service.
"""

from __future__ import annotations

from enum import Enum

from registry.core.vocabulary import ROLES
from registry.errors import Forbidden


class Action(str, Enum):
    """What a caller may ask of the registry."""

    WRITE_RECORDS = "write_records"  # create, replace, withdraw, batches: the caller's site
    READ_RECORDS = "read_records"  # read, list, history: the caller's site
    READ_DICTIONARY = "read_dictionary"  # the dictionary, the REDCap dictionary, the template
    QUERY_AGGREGATES = "query_aggregates"  # the catalogue, pooled counts, life tables
    READ_QUERY_LOG = "read_query_log"
    READ_RELEASES = "read_releases"  # the list of releases and their (protected) record counts
    CUT_RELEASE = "cut_release"  # freeze a new release (privacy.md 2.1)
    # A release's exact record count and its number of changes (others see the count protected)
    READ_EXACT_RELEASE_COUNTS = "read_exact_release_counts"
    OPEN_CONSOLE = "open_console"  # the console's home page (what each role may do there)


PERMISSIONS: dict[Action, frozenset[str]] = {
    Action.WRITE_RECORDS: frozenset({"submitter"}),
    Action.READ_RECORDS: frozenset({"submitter"}),
    Action.READ_DICTIONARY: frozenset(ROLES),
    Action.QUERY_AGGREGATES: frozenset({"coordinator", "steward"}),
    Action.READ_QUERY_LOG: frozenset({"steward"}),
    Action.READ_RELEASES: frozenset({"coordinator", "steward"}),
    Action.CUT_RELEASE: frozenset({"steward"}),
    Action.READ_EXACT_RELEASE_COUNTS: frozenset({"steward"}),
    Action.OPEN_CONSOLE: frozenset(ROLES),
}


def allowed(role: str, action: Action) -> bool:
    """Whether a role may perform an action."""
    return role in PERMISSIONS[action]


def authorize(role: str, action: Action) -> None:
    """Refuse (403) a caller whose role may not perform the action."""
    if not allowed(role, action):
        raise Forbidden(f"a {role} token may not use this endpoint")
