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


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"


async def _harness_factory(url):
    from tests.harness import start_harness, stop_harness

    started = []

    async def start(**overrides):
        harness = await start_harness(url, **overrides)
        started.append(harness)
        return harness

    return start, started, stop_harness


@pytest.fixture
async def start_bot_on_sqlite(sqlite_url):
    """Start the real bot (SQLite file) against fresh fakes, with setting overrides."""
    start, started, stop = await _harness_factory(sqlite_url)
    yield start
    for harness in started:
        await stop(harness)


@pytest.fixture
async def start_bot_on_each_database(database_url):
    """Start the real bot against fresh fakes, once on a SQLite file and once on PostgreSQL."""
    start, started, stop = await _harness_factory(database_url)
    yield start
    for harness in started:
        await stop(harness)


@pytest.fixture
def redis_server():
    """A fresh, private Redis (skipped with a reason where redis-server is missing; required in CI)."""
    from tests.redis_server import RedisServer, redis_binary

    server = RedisServer(redis_binary())
    server.start()
    yield server
    server.kill()
