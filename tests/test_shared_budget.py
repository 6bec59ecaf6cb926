"""Slack budgets shared through a real Redis by several processes (each a RedisBudgets with its own client)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis.asyncio import Redis

from bot.delivery.budgets import Limit
from bot.delivery.shared_budget import RETRY_AFTER, RedisBudgets

KEY = "slackbot:{T1:chat.update:}"


def process(url: str, name: str) -> RedisBudgets:
    return RedisBudgets(Redis.from_url(url), share=2, process_id=name)


@pytest.fixture
async def two_processes(redis_server):
    one, two = process(redis_server.url, "one"), process(redis_server.url, "two")
    yield one, two
    await one.redis.aclose()
    await two.redis.aclose()


async def spend(budgets: RedisBudgets, limit: Limit, until: float, starts: list[float]) -> None:
    budget = budgets.budget(KEY, limit)
    while time.monotonic() < until:
        wait = await budget.take()
        if wait <= 0:
            starts.append(time.monotonic())
        else:
            await asyncio.sleep(min(wait, until - time.monotonic()) if until > time.monotonic() else 0)


def busiest_window(starts: list[float], window: float) -> int:
    starts = sorted(starts)
    return max((sum(1 for t in starts[i:] if t < start + window) for i, start in enumerate(starts)), default=0)


async def test_two_processes_together_never_exceed_the_limit_and_one_may_use_it_all(two_processes):
    limit = Limit(20, window=1.0, burst=5, margin=0.0)
    one, two = two_processes
    starts_one: list[float] = []
    starts_two: list[float] = []
    until = time.monotonic() + 3.0
    await asyncio.gather(
        *(spend(p, limit, until, s) for p, s in ((one, starts_one), (two, starts_two)) for _ in range(3))
    )
    # 1 ms of tolerance: the window is on Redis's clock, the starts on ours
    assert busiest_window(starts_one + starts_two, 0.999) <= 20
    assert starts_one and starts_two, "both processes got calls"
    total = len(starts_one) + len(starts_two)
    assert total >= 5 + 15 * 3 * 0.8, f"together they used the budget ({total} calls in 3 s)"

    alone: list[float] = []
    await asyncio.sleep(1.0)  # the window empties
    await spend(one, limit, time.monotonic() + 2.0, alone)
    assert len(alone) > 20, f"a process alone uses the whole shared budget, not half of it ({len(alone)} in 2 s)"
    assert busiest_window(alone, 0.999) <= 20


async def test_a_pause_after_a_429_holds_every_process(two_processes):
    limit = Limit(50, window=60.0)
    one, two = two_processes
    await one.budget(KEY, limit).pause(1.5)
    wait = await two.budget(KEY, limit).take()
    assert 1.3 < wait <= 1.5, wait
    await asyncio.sleep(wait)
    assert await two.budget(KEY, limit).take() == 0


async def test_the_keys_expire_on_their_own(redis_server):
    limit = Limit(50, window=60.0)
    one = process(redis_server.url, "one")
    try:
        budget = one.budget(KEY, limit)
        assert await budget.take() == 0
        await budget.pause(2.0)
        keys = await one.redis.keys("slackbot:*")
        assert len(keys) == 3
        for key in keys:
            ttl = await one.redis.pttl(key)
            assert 0 < ttl <= int(limit.kept_window * 1000), (key, ttl)
    finally:
        await one.redis.aclose()


async def test_redis_down_falls_back_to_the_local_share_logged_once_and_resumes(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="bot.delivery.shared_budget")
    limit = Limit(10, window=60.0, burst=10)
    one = process(redis_server.url, "one")
    try:
        budget = one.budget(KEY, limit)
        assert await budget.take() == 0  # shared, and recorded locally too
        redis_server.kill()

        taken = 0
        started = time.monotonic()
        for _ in range(20):
            before = time.monotonic()
            if await budget.take() == 0:
                taken += 1
            assert time.monotonic() - before < 0.2, "a dead Redis is not waited for"
        assert taken == 10 // 2 - 1, "half the budget (SLACK_BUDGET_SHARE=2), less the call already made"
        assert time.monotonic() - started < 2
        down = [r for r in caplog.records if "Redis is not answering" in r.getMessage()]
        assert len(down) == 1, [r.getMessage() for r in caplog.records]

        redis_server.start()  # the same port: Redis is back, empty
        await asyncio.sleep(RETRY_AFTER + 0.1)
        assert await budget.take() == 0, "the shared budget again: the local share is spent, Redis's is not"
        assert await one.redis.exists(f"{KEY}:w")
        assert any("Redis answers again" in r.getMessage() for r in caplog.records)
    finally:
        await one.redis.aclose()


async def test_a_slow_redis_is_not_waited_for(redis_server):
    limit = Limit(10, window=60.0, burst=10)
    one = process(redis_server.url, "one")
    blocker = Redis.from_url(redis_server.url)
    try:
        budget = one.budget(KEY, limit)
        assert await budget.take() == 0
        sleeping = asyncio.create_task(blocker.execute_command("DEBUG", "SLEEP", "0.5"))
        await asyncio.sleep(0.05)
        before = time.monotonic()
        wait = await budget.take()
        assert time.monotonic() - before < 0.15, "more than 50 ms: the local share decides"
        assert wait == 0
        assert one.down
        await sleeping
    finally:
        await one.redis.aclose()
        await blocker.aclose()


async def test_calls_made_while_redis_did_not_answer_are_counted_there_when_it_answers_again(
    redis_server, two_processes
):
    """One process may fall back alone while the others still count in Redis: its calls must reach them."""
    limit = Limit(10, window=60.0, burst=10)
    one, two = two_processes
    budget = one.budget(KEY, limit)
    assert await budget.take() == 0
    await budget.finished()
    redis_server.kill()
    for _ in range(3):
        assert await budget.take() == 0  # this process's share, counted here only
        await budget.finished()
    redis_server.start()  # the same port: Redis is back, empty (the first call is lost with it)
    await asyncio.sleep(RETRY_AFTER + 0.1)
    assert await budget.take() == 0
    assert await one.redis.zcard(f"{KEY}:w") == 4, "the three calls made without Redis, and this one"
    other = two.budget(KEY, limit)
    taken = [await other.take(urgent=True) for _ in range(10)]
    assert sum(1 for wait in taken if wait <= 0) == 10 - 4, taken


async def test_a_process_without_redis_leaves_alone_what_the_others_spent(redis_server, two_processes):
    limit = Limit(10, window=60.0, burst=10)
    one, two = two_processes
    busy = two.budget(KEY, limit)
    for _ in range(8):
        assert await busy.take(urgent=True) == 0
    budget = one.budget(KEY, limit)
    assert await budget.take(urgent=True) == 0  # Redis says 9 of 10 are spent
    redis_server.kill()
    taken = [await budget.take(urgent=True) for _ in range(5)]
    assert sum(1 for wait in taken if wait <= 0) == 1, f"its share (5) would allow 4 more: {taken}"


async def test_a_process_that_spent_more_than_its_share_waits_only_until_redis_is_asked_again(redis_server):
    """Alone, a process may spend the whole shared budget: its fallback share is then over-spent, and must not make
    it wait for the local window (most of a minute) when Redis is back within a second."""
    limit = Limit(10, window=60.0, burst=10)
    one = process(redis_server.url, "one")
    try:
        budget = one.budget(KEY, limit)
        for _ in range(6):
            assert await budget.take(urgent=True) == 0  # 6 of 10 in Redis: more than this process's share of 5
        redis_server.kill()
        wait = await budget.take(urgent=True)
        assert 0 < wait <= RETRY_AFTER, wait
    finally:
        await one.redis.aclose()


async def test_calls_made_without_redis_are_forgotten_once_out_of_the_window(redis_server):
    """A budget that spent during an outage and was never taken from again must still be forgotten (idle)."""
    now = [1000.0]
    one = RedisBudgets(Redis.from_url(redis_server.url), share=2, process_id="one", clock=lambda: now[0])
    try:
        budget = one.budget(KEY, Limit(10, window=60.0, burst=10))
        redis_server.kill()
        assert await budget.take() == 0
        await budget.finished()
        now[0] += budget.limit.kept_window / 2
        assert not budget.idle, "its call is still in the window, and Redis has not heard of it"
        now[0] += budget.limit.kept_window
        assert budget.idle
    finally:
        await one.redis.aclose()


@pytest.mark.parametrize("urgent", [False, True])
async def test_the_window_holds_even_for_urgent_calls(redis_server, urgent):
    limit = Limit(4, window=60.0, burst=1)
    one = process(redis_server.url, "one")
    try:
        budget = one.budget(KEY, limit)
        results = [await budget.take(urgent=urgent) for _ in range(6)]
        taken = sum(1 for wait in results if wait <= 0)
        assert taken == (4 if urgent else 1), results
        assert all(wait > 0 for wait in results[taken:])
    finally:
        await one.redis.aclose()


async def test_a_finished_call_counts_from_its_end_in_every_process(two_processes):
    limit = Limit(1, window=1.0, margin=0.0)
    one, two = two_processes
    budget = one.budget(KEY, limit)
    assert await budget.take() == 0
    await asyncio.sleep(0.6)  # the call took this long (a slow request)
    await budget.finished()
    await asyncio.sleep(0.6)  # 1.2 s after its start, 0.6 s after its end
    wait = await two.budget(KEY, limit).take()
    assert 0.2 < wait <= 0.45, wait


async def test_a_full_window_seen_once_does_not_look_full_for_ever(redis_server):
    """may_start_stream asks wait_time() without taking: the count from the last take must age out, or a workspace
    whose stream starts once ran out would never stream again in this process."""
    now = [1000.0]
    one = RedisBudgets(Redis.from_url(redis_server.url), share=2, process_id="one")
    try:
        budget = one.budget(KEY, Limit(2, window=60.0))
        budget._clock = lambda: now[0]  # the estimate's clock; Redis keeps its own
        while budget.used() < 2:
            if await budget.take(urgent=True) <= 0:
                await budget.finished()
        assert budget.wait_time() > 0
        now[0] += budget.limit.kept_window * 0.75
        assert budget.used() == 1  # most of the window later, most of it has left (rounded up)
        now[0] += budget.limit.kept_window
        assert budget.used() == 0 and budget.wait_time() == 0
    finally:
        await one.redis.aclose()
