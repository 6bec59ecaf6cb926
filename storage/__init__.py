"""Database plumbing shared by the bot and billing: the async engine and the Alembic migrations."""

from storage.engine import create_engine, create_reader, database_missing
from storage.errors import is_transient
from storage.migrate import migrate

__all__ = ["create_engine", "create_reader", "database_missing", "is_transient", "migrate"]
