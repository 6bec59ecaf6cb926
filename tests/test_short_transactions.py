"""ShortTransactions: turns in order and never more than its width, connections handed over while others wait,
none kept once nobody does, whatever is cancelled or fails on the way.

The engine's pool has more connections than the width, so that a missing bound or a missing hand-over shows;
the tests keep every connection they were given, so that one never given back stays checked out (instead of
being collected quietly)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from storage import ShortTransactions


class Counted:
    def __init__(self, engine):
        self.engine = engine
        self.checkouts = 0
        event.listen(engine.sync_engine.pool, "checkout", self._checkout)

    def _checkout(self, *_):
        self.checkouts += 1


@pytest.fixture
async def pool(tmp_path):
    """SQLite with three connections, deferred transactions: reads run side by side."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}", pool_size=3, max_overflow=0)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE done (n INTEGER)"))
    yield Counted(engine)
    await engine.dispose()


async def test_turns_are_bounded_taken_in_order_and_handed_over_while_others_wait(pool):
    turns = ShortTransactions(pool.engine, 2, hand_over=True)
    order, kept, inside, most = [], [], set(), 0

    async def one(n: int) -> None:
        nonlocal most
        async with turns.begin() as connection:
            kept.append(connection)
            order.append(n)
            inside.add(n)
            most = max(most, len(inside))
            await connection.execute(text("SELECT count(*) FROM done"))
            await asyncio.sleep(0.005)
            inside.discard(n)

    await asyncio.gather(*(one(n) for n in range(8)))
    assert most == 2, "two at once, never three (the pool has three)"
    assert order == list(range(8)), "turns taken in order of arrival"
    assert pool.checkouts == 2, "each of the two connections went from one transaction to the next"
    assert pool.engine.pool.checkedout() == 0, "nobody waits: both are back in the pool"


async def test_without_hand_over_each_transaction_gives_its_connection_back(pool):
    turns = ShortTransactions(pool.engine, 1, hand_over=False)
    kept = []

    async def one() -> None:
        async with turns.begin() as connection:
            kept.append(connection)
            await connection.execute(text("SELECT 1"))

    await asyncio.gather(*(one() for _ in range(4)))
    assert pool.checkouts == 4
    assert pool.engine.pool.checkedout() == 0


async def test_a_failed_transaction_is_rolled_back_and_its_connection_not_handed_on(pool):
    turns = ShortTransactions(pool.engine, 1, hand_over=True)
    kept = []

    async def failing() -> None:
        async with turns.begin() as connection:
            kept.append(connection)
            await connection.execute(text("INSERT INTO done VALUES (1)"))
            await asyncio.sleep(0.01)
            raise RuntimeError("a fault inside the transaction")

    async def after() -> None:
        async with turns.begin() as connection:
            kept.append(connection)
            await connection.execute(text("INSERT INTO done VALUES (2)"))

    results = await asyncio.gather(failing(), after(), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert pool.checkouts == 2, "the one after took a connection of its own, from the pool"
    async with pool.engine.connect() as connection:
        assert (await connection.execute(text("SELECT n FROM done"))).scalars().all() == [2]
    assert pool.engine.pool.checkedout() == 0


async def test_a_waiter_cancelled_before_or_just_after_its_turn_keeps_no_connection_and_passes_the_turn_on(pool):
    turns = ShortTransactions(pool.engine, 1, hand_over=True)
    release = asyncio.Event()
    kept = []

    async def first() -> None:
        async with turns.begin() as connection:
            kept.append(connection)
            await release.wait()
        given_its_turn.cancel()  # handed the connection a moment ago, not yet running

    async def waiting() -> None:
        async with turns.begin():
            raise AssertionError("a cancelled waiter never runs")

    async def last() -> None:
        async with turns.begin() as connection:
            kept.append(connection)

    running = asyncio.create_task(first())
    await asyncio.sleep(0.01)
    cancelled_while_waiting = asyncio.create_task(waiting())
    given_its_turn = asyncio.create_task(waiting())
    after_them = asyncio.create_task(last())
    await asyncio.sleep(0.01)
    cancelled_while_waiting.cancel()
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(running, after_them), 5)
    for task in (cancelled_while_waiting, given_its_turn):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert kept[0] is kept[1], "the turn and its connection went on to the one after"
    assert pool.checkouts == 1
    assert pool.engine.pool.checkedout() == 0
