from __future__ import annotations

import pytest

from storage import create_engine, migrate
from tests.databases import drop_postgres_database, new_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request, tmp_path):
    """A migrated, empty database: a SQLite file, then PostgreSQL (skipped with a reason if unreachable)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
        name = None
    else:
        url, name = await new_postgres_database()
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    yield url
    if name:
        await drop_postgres_database(name)


@pytest.fixture
async def engine(database_url):
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()
