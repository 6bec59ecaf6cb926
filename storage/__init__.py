"""Database plumbing shared by the bot and billing: the async engine and the Alembic migrations."""

from storage.engine import create_engine, create_reader
from storage.errors import is_transient
from storage.migrate import migrate

__all__ = ["create_engine", "create_reader", "is_transient", "migrate"]
