"""SQLAlchemy models of the registry."""

from registry.models.history import AuditEntry, QueryLogEntry, RecordVersion, Tombstone
from registry.models.record import LIST_FIELDS, Record, flag_column
from registry.models.site import Site
from registry.models.token import ApiToken

__all__ = [
    "ApiToken", "AuditEntry", "LIST_FIELDS", "QueryLogEntry", "Record", "RecordVersion", "Site",
    "Tombstone", "flag_column",
]
