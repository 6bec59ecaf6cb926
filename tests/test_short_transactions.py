"""ShortTransactions: turns in order, connections handed over while others wait, none kept once nobody does,
whatever is cancelled or fails on the way."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text

from storage import create_engine
from storage.short_transactions import ShortTransactions


@pytest.fixture
async def engine(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE done (n INTEGER)"))
    yield engine
    await engine.dispose()


def raw(connection) -> int:
    return id(connection.sync_connection.connection.dbapi_connection)


async def test_turns_are_bounded_taken_in_order_and_handed_over_while_others_wait(engine):
    turns = ShortTransactions(engine, 1, hand_over=True)
    order, used, inside = [], set(), []

    async def one(n: int) -> None:
        async with turns.begin() as connection:
            inside.append(n)
            assert len(inside) == 1
            await connection.execute(text("INSERT INTO done VALUES (:n)"), {"n": n})
            await asyncio.sleep(0)
            used.add(raw(connection))
            order.append(n)
            inside.remove(n)

    await asyncio.gather(*(one(n) for n in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert len(used) == 1, "one connection went from each transaction to the next"
    assert engine.pool.checkedout() == 0, "nobody waits: the connection is back in the pool"
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM done"))).scalar() == 5


async def test_without_hand_over_each_transaction_gives_its_connection_back(engine):
    turns = ShortTransactions(engine, 1, hand_over=False)
    checkouts = 0

    def counted(*_):
        nonlocal checkouts
        checkouts += 1

    event.listen(engine.sync_engine.pool, "checkout", counted)

    async def one(n: int) -> None:
        async with turns.begin() as connection:
            await connection.execute(text("INSERT INTO done VALUES (:n)"), {"n": n})

    await asyncio.gather(*(one(n) for n in range(4)))
    assert checkouts == 4
    assert engine.pool.checkedout() == 0


async def test_a_failed_transaction_is_rolled_back_and_its_connection_not_handed_on(engine):
    turns = ShortTransactions(engine, 1, hand_over=True)
    seen = []

    async def failing() -> None:
        async with turns.begin() as connection:
            await connection.execute(text("INSERT INTO done VALUES (1)"))
            seen.append(raw(connection))
            await asyncio.sleep(0.01)
            raise RuntimeError("a fault inside the transaction")

    async def after() -> None:
        async with turns.begin() as connection:
            seen.append(raw(connection))
            await connection.execute(text("INSERT INTO done VALUES (2)"))

    results = await asyncio.gather(failing(), after(), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT n FROM done"))).scalars().all() == [2]
    assert engine.pool.checkedout() == 0


async def test_a_waiter_cancelled_before_or_just_after_its_turn_keeps_no_connection_and_passes_the_turn_on(engine):
    turns = ShortTransactions(engine, 1, hand_over=True)
    release = asyncio.Event()
    used = []

    async def first() -> None:
        async with turns.begin() as connection:
            used.append(raw(connection))
            await release.wait()
        given_its_turn.cancel()  # handed the connection a moment ago, not yet running

    async def waiting() -> None:
        async with turns.begin():
            raise AssertionError("a cancelled waiter never runs")

    async def last() -> None:
        async with turns.begin() as connection:
            used.append(raw(connection))

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
    assert used[0] == used[1], "the turn and its connection went on to the one after"
    assert engine.pool.checkedout() == 0
