"""SQLAlchemy models of the registry."""

from registry.models.console import CONSOLE_SECRET, ConsoleSession
from registry.models.history import AuditEntry, QueryLogEntry, RecordVersion, Tombstone
from registry.models.record import LIST_FIELDS, Record, flag_column
from registry.models.release import (
    Release, ReleasedRecord, in_release, release_columns, release_records,
)
from registry.models.secret import RegistrySecret
from registry.models.site import Site
from registry.models.token import ApiToken

__all__ = [
    "ApiToken", "AuditEntry", "CONSOLE_SECRET", "ConsoleSession", "LIST_FIELDS", "QueryLogEntry",
    "Record", "RecordVersion", "RegistrySecret", "Release", "ReleasedRecord", "Site", "Tombstone",
    "flag_column", "in_release", "release_columns", "release_records",
]
