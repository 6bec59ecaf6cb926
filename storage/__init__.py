"""Database plumbing shared by the bot and billing: the async engine and the Alembic migrations."""

from storage.engine import (
    create_engine,
    create_reader,
    database_missing,
    describe_database,
    pool_connections,
    short_transactions,
)
from storage.errors import is_transient
from storage.migrate import migrate, schema_revisions
from storage.short_transactions import ShortTransactions

__all__ = [
    "ShortTransactions",
    "create_engine",
    "create_reader",
    "database_missing",
    "describe_database",
    "is_transient",
    "migrate",
    "pool_connections",
    "schema_revisions",
    "short_transactions",
]
