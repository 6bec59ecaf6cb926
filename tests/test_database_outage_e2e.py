"""PostgreSQL stops just as an answer ends and starts again 20 s later: the answer is charged once, its turn
reaches the conversation history, and the ledger verifies. Meanwhile no sweeper gives its hold back."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa

from bot.delivery import CURSOR
from bot.tables import conversation_turns
from tests.databases import drop_postgres_database, new_postgres_database
from tests.fakes.anthropic import Script
from tests.fakes.outage import DatabaseOutage
from tests.harness import TEAM, start_harness, stop_harness
from tests.test_credits_e2e import usage_rows

OUTAGE_SECONDS = 20
ANSWER = " ".join(f"word{i}" for i in range(40))


@pytest.fixture
async def postgres_behind_a_switch():
    url, name = await new_postgres_database()
    address = urlparse(url.replace("postgresql+asyncpg://", "postgresql://"))
    outage = DatabaseOutage(address.hostname, address.port or 5432)
    await outage.start()
    yield url.replace(f"{address.hostname}:{address.port or 5432}", f"127.0.0.1:{outage.port}"), outage
    await outage.stop()
    await drop_postgres_database(name)


async def test_settlement_and_history_wait_for_the_database_and_happen_once(postgres_behind_a_switch):
    url, outage = postgres_behind_a_switch
    # A sweeper every second, with holds that expire after two: only "a live owner is still settling" keeps it.
    h = await start_harness(
        url, sweep_interval_seconds=1, reservation_ttl_seconds=2, ai_credits_per_message=None, free_credits=100_000
    )
    try:
        h.claude.enqueue(Script(text=ANSWER, delta_chars=10, delay=0.1))
        sent = await h.mention("tell me")
        await h.claude.wait_for_requests(1)
        await asyncio.sleep(0.5)  # the placeholder is up and text is flowing: the end of the answer is near
        await outage.cut()
        received = h.claude.requests[0]
        while received.text != ANSWER and not received.cancelled:
            await asyncio.sleep(0.05)  # Claude finishes the answer while the database is away
        await asyncio.sleep(OUTAGE_SECONDS)
        (message,) = h.slack.thread("C0001", sent.ts)
        assert CURSOR in h.slack.visible_markdown(message), "not final before it is settled"
        await outage.restore()
        await h.idle(timeout=60)

        assert h.reply_text("C0001", sent.ts) == ANSWER
        (charge,) = await usage_rows(h, sent.event_id)
        assert charge.amount < 0, "charged once, for what Claude consumed"
        ledger = await h.services.credits.history(TEAM, limit=1000)
        assert [(e.kind, e.source) for e in ledger if e.external_id == charge.external_id] == [("usage", "answer")], (
            "the hold was never swept meanwhile, though it expired during the outage"
        )
        async with h.services.engine.connect() as connection:
            turns = (
                await connection.execute(
                    sa.select(conversation_turns.c.role, conversation_turns.c.content)
                    .where(conversation_turns.c.thread_ts == sent.ts)
                    .order_by(conversation_turns.c.id)
                )
            ).all()
        assert [tuple(turn) for turn in turns] == [("user", "tell me"), ("assistant", ANSWER)]
        assert await h.services.credits.verify() == []
        balance = await h.services.credits.balance(TEAM)
        assert balance.reserved == 0 and balance.balance == 100_000 + charge.amount
    finally:
        await stop_harness(h)
