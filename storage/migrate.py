from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"

# Any constant works; it only has to be the same in every process of this app.
_MIGRATION_LOCK_KEY = 7_346_112_001


def _alembic_config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision. Safe to run from several processes at once."""
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Two web processes starting together must not both create the same tables.
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        await connection.run_sync(_upgrade)


def _revisions(connection) -> tuple[str | None, str | None]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    current = MigrationContext.configure(connection).get_current_revision()
    return current, ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()


async def schema_revisions(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """(the database's revision, the newest one): equal when the schema is up to date; None for no schema."""
    async with engine.connect() as connection:
        return await connection.run_sync(_revisions)
