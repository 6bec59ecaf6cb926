"""Bursts of questions in a channel: Slack allows about one post a second per channel, and every question
still gets exactly one visible outcome (its answer, or the true reason it is not answered)."""

from __future__ import annotations

import asyncio

from sqlalchemy import event

from storage import pool_connections
from tests.harness import BotHarness

NOT_ENOUGH = "doesn't have enough credits"
# Posts are what these tests are about: chat.update gets room for every answer's two edits within the minute.
EDITS = {"slack_edits_per_minute": 200}


async def start(start_bot, **overrides) -> BotHarness:
    h = await start_bot(**EDITS, **overrides)
    h.slack.update_limit_per_minute = EDITS["slack_edits_per_minute"]
    return h


async def mention_burst(h: BotHarness, count: int, seconds: float, channels: list[str]) -> list[tuple[str, str, int]]:
    """`count` mentions spread evenly over `seconds`, round-robin over `channels`: (channel, ts, n) each."""

    async def one(n: int) -> tuple[str, str, int]:
        await asyncio.sleep(n * seconds / count)
        channel = channels[n % len(channels)]
        sent = await h.mention(f"question {n}", channel=channel)
        assert sent.status == 200
        return channel, sent.ts, n

    return await asyncio.gather(*(one(n) for n in range(count)))


def outcomes(h: BotHarness, sent: list[tuple[str, str, int]]) -> dict[str, list[int]]:
    """Each question's thread, classified: answered (exactly), told it lacks credits, silent, or more than one reply."""
    found: dict[str, list[int]] = {"answered": [], "no credits": [], "silent": [], "several": [], "other": []}
    for channel, ts, n in sent:
        replies = h.slack.thread(channel, ts)
        if not replies:
            found["silent"].append(n)
        elif len(replies) > 1:
            found["several"].append(n)
        elif h.slack.visible_markdown(replies[0]).startswith(f"You said: question {n}"):
            found["answered"].append(n)
        elif NOT_ENOUGH in h.slack.visible_markdown(replies[0]):
            found["no credits"].append(n)
        else:
            found["other"].append(n)
    return found


async def test_200_mentions_over_10_channels_with_credits_for_50_get_50_answers_and_150_credit_replies(
    start_bot_on_each_database,
):
    h = await start(start_bot_on_each_database, free_credits=500, ai_credits_per_message=10)
    channels = [f"CB{k:02d}" for k in range(10)]
    sent = await mention_burst(h, 200, 2.0, channels)
    await h.idle(timeout=150)
    found = outcomes(h, sent)
    assert {kind: len(ns) for kind, ns in found.items()} == {
        "answered": 50,
        "no credits": 150,
        "silent": 0,
        "several": 0,
        "other": 0,
    }, found
    posts = h.slack.calls_to("chat.postMessage")
    assert [c for c in posts if c.status == 429] == [], (
        "the per-channel pace is the bot's own: Slack never had to refuse"
    )
    assert await h.services.credits.verify() == []
    balance = await h.services.credits.balance("T0001")
    assert (balance.balance, balance.reserved) == (0, 0)


async def test_30_mentions_in_one_channel_within_3_seconds_are_all_answered_exactly(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    sent = await mention_burst(h, 30, 3.0, ["CBUSY"])
    await h.idle(timeout=150)
    found = outcomes(h, sent)
    assert len(found["answered"]) == 30, found
    for channel, ts, n in sent:
        (reply,) = h.slack.thread(channel, ts)
        assert h.slack.visible_markdown(reply) == f"You said: question {n}"
    post_times = sorted(c.at for c in h.slack.calls_to("chat.postMessage") if c.status == 200)
    assert len(post_times) == 30
    assert post_times[-1] - post_times[0] >= 30 - 3 - 1, "about one post a second in the channel, after a short burst"
    assert [c for c in h.slack.calls if c.status == 429] == []


async def test_a_burst_claims_at_most_as_many_questions_at_once_as_the_pool_keeps_connections_handed_over_in_turn(
    start_bot_on_each_database,
):
    """A burst must not take every connection the pool allows (overflow included) for its claims: the database and
    the bot would share the CPU among them all, and acknowledging Slack's next requests would wait behind them. On
    PostgreSQL a claim that is done hands its connection to the next one waiting (no ping, no checkout); on SQLite
    the only connection goes back to the pool after each claim, as the other writers need it too."""
    h = await start(start_bot_on_each_database, free_credits=10_000, ai_credits_per_message=1)
    claiming: set[int] = set()
    most = 0
    claims_since_checkout: dict[int, int] = {}
    most_per_checkout = 0

    def checkout(dbapi_connection, record, proxy):
        claims_since_checkout[id(dbapi_connection)] = 0

    def statement(connection, cursor, sql, parameters, context, executemany):
        nonlocal most, most_per_checkout
        if sql.lstrip().upper().startswith("INSERT INTO SLACK_EVENTS"):
            claiming.add(id(connection))
            most = max(most, len(claiming))
            checked_out = id(connection.connection.dbapi_connection)
            claims_since_checkout[checked_out] += 1
            most_per_checkout = max(most_per_checkout, claims_since_checkout[checked_out])

    def ended(connection):
        claiming.discard(id(connection))

    engine = h.services.engine.sync_engine
    listeners = [(engine, "before_cursor_execute", statement), (engine, "commit", ended), (engine, "rollback", ended)]
    listeners.append((engine.pool, "checkout", checkout))
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        sent = await mention_burst(h, 60, 0.0, [f"CP{k:02d}" for k in range(20)])
        await h.idle(timeout=120)
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)
    assert len(outcomes(h, sent)["answered"]) == 60
    kept = pool_connections(h.services.engine)
    assert 1 <= most <= kept, f"{most} claims at once, the pool keeps {kept} connections"
    if h.services.engine.dialect.name == "postgresql":
        assert most > 1, "claims still run side by side"
        assert most_per_checkout > 1, "a connection went on from one claim to the next"
    else:
        assert most_per_checkout == 1
