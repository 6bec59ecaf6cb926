"""The installation store keeps found bots for a short while, and never keeps what must be read fresh."""

from __future__ import annotations

import asyncio
import time

import pytest
from slack_sdk.oauth.installation_store import Installation

from bot.installation_cache import CachedInstallationStore
from storage import create_engine, migrate


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def store_parts(sqlite_url):
    engine = create_engine(sqlite_url)
    await migrate(engine)
    clock = ManualClock()
    yield engine, clock
    await engine.dispose()


def installation(team: str, token: str, **extra) -> Installation:
    return Installation(
        app_id="A1",
        enterprise_id=None,
        team_id=team,
        bot_token=token,
        bot_id="B1",
        bot_user_id="UBOT",
        bot_scopes=["chat:write"],
        user_id="U1",
        installed_at=time.time(),
        **extra,
    )


def store(engine, clock, **kwargs) -> CachedInstallationStore:
    return CachedInstallationStore(client_id="111.222", engine=engine, ttl=30.0, clock=clock, **kwargs)


async def test_a_bot_is_kept_for_the_ttl_then_read_again(store_parts):
    engine, clock = store_parts
    mine, other_process = store(engine, clock), store(engine, clock)
    await mine.async_save(installation("T1", "xoxb-1"))
    assert (await mine.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-1"

    await other_process.async_delete_all(enterprise_id=None, team_id="T1")  # another process uninstalls
    assert (await mine.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-1", "kept"
    clock.advance(31)
    assert (await mine.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-1", "answered at once..."
    await asyncio.sleep(0.2)  # ...while it is read again
    assert await mine.async_find_bot(enterprise_id=None, team_id="T1") is None, "seen once the ttl has passed"


async def test_warm_reads_every_bot_at_once_and_a_burst_waits_for_one_lookup(store_parts):
    engine, clock = store_parts
    mine = store(engine, clock)
    for n in range(3):
        await mine.async_save(installation(f"T{n}", f"xoxb-{n}"))
    await mine.async_save(installation("T0", "xoxb-newer"))
    assert await store(engine, clock).warm() == 3
    fresh = store(engine, clock)
    await fresh.warm()
    await store(engine, clock).async_delete_all(enterprise_id=None, team_id="T0")  # gone from the database...
    assert (await fresh.async_find_bot(enterprise_id=None, team_id="T0")).bot_token == "xoxb-newer", (
        "...not from memory"
    )

    other = store(engine, clock)
    lookups = []
    real_find = other._find

    async def counted(key):
        lookups.append(key)
        return await real_find(key)

    other._find = counted
    bots = await asyncio.gather(*(other.async_find_bot(enterprise_id=None, team_id="T1") for _ in range(20)))
    assert {bot.bot_token for bot in bots} == {"xoxb-1"} and len(lookups) == 1


async def test_this_process_changes_are_seen_at_once(store_parts):
    engine, clock = store_parts
    mine = store(engine, clock)
    await mine.async_save(installation("T1", "xoxb-1"))
    await mine.async_find_bot(enterprise_id=None, team_id="T1")
    await mine.async_save(installation("T1", "xoxb-2"))
    assert (await mine.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-2"
    await mine.async_delete_all(enterprise_id=None, team_id="T1")
    assert await mine.async_find_bot(enterprise_id=None, team_id="T1") is None


async def test_a_rotating_token_due_for_refresh_is_always_read_fresh(store_parts):
    engine, clock = store_parts
    mine, other_process = store(engine, clock, refresh_minutes=120), store(engine, clock)
    soon = int(time.time()) + 3600  # within the two hours before expiry in which it is refreshed
    await mine.async_save(installation("T1", "xoxe-1", bot_refresh_token="xoxe-r1", bot_token_expires_at=soon))
    await mine.async_find_bot(enterprise_id=None, team_id="T1")
    later = int(time.time()) + 12 * 3600
    await other_process.async_save(
        installation("T1", "xoxe-2", bot_refresh_token="xoxe-r2", bot_token_expires_at=later)
    )
    assert (await mine.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxe-2"
