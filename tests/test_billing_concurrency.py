"""Many answers at once: holds never exceed the balance, and every effect happens exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billing import Credits, Insufficient, Reservation
from billing.tables import credit_ledger, credit_reservations
from tests.clocks import Clock

pytestmark = pytest.mark.billing

TEAM = "T0001"


async def watch_available(credits: Credits, done: asyncio.Event) -> list[int]:
    """Sample the available balance until `done`: it must never be seen below zero."""
    seen = []
    while not done.is_set():
        seen.append((await credits.balance(TEAM)).available)
        await asyncio.sleep(0)
    return seen


async def test_fifty_concurrent_reservations_against_room_for_ten(engine):
    credits = Credits(engine)
    await credits.grant(TEAM, 100, kind="grant", source="test", external_id="initial")

    done = asyncio.Event()
    watcher = asyncio.create_task(watch_available(credits, done))
    results = await asyncio.gather(*(credits.reserve(TEAM, f"U{i % 7}", 10, f"r{i}") for i in range(50)))
    done.set()
    seen = await watcher

    holds = [result for result in results if isinstance(result, Reservation)]
    assert len(holds) == 10
    assert sum(isinstance(result, Insufficient) for result in results) == 40
    assert all(result.needed == 10 and result.available >= 0 for result in results if isinstance(result, Insufficient))
    assert seen and min(seen) >= 0
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved, balance.available) == (100, 100, 0)
    assert await credits.verify() == []

    # Every hold settled twice, all at once (a retry racing the first attempt): each charged once.
    settlements = await asyncio.gather(*(credits.settle(hold.id, 7) for hold in holds for _ in range(2)))
    assert sum(not s.already_settled for s in settlements) == 10
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved) == (30, 0)
    async with engine.connect() as connection:
        usage_rows = (
            await connection.execute(sa.select(sa.func.count()).where(credit_ledger.c.kind == "usage"))
        ).scalar_one()
    assert usage_rows == 10
    assert await credits.verify() == []


async def test_concurrent_retries_of_one_reservation_hold_once(engine):
    credits = Credits(engine)
    await credits.grant(TEAM, 100, kind="grant", source="test", external_id="initial")
    results = await asyncio.gather(*(credits.reserve(TEAM, "U1", 60, "same") for _ in range(10)))
    assert all(result == Reservation(id="same", team_id=TEAM, amount=60) for result in results)
    assert (await credits.balance(TEAM)).reserved == 60
    assert await credits.verify() == []


async def test_free_credits_are_granted_once_under_concurrent_first_sight(engine):
    credits = Credits(engine, free_credits=100)
    results = await asyncio.gather(*(credits.reserve(TEAM, "U1", 10, f"r{i}") for i in range(20)))
    assert sum(isinstance(result, Reservation) for result in results) == 10
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved) == (100, 100)
    async with engine.connect() as connection:
        trials = (
            (await connection.execute(sa.select(credit_ledger.c.amount).where(credit_ledger.c.kind == "trial")))
            .scalars()
            .all()
        )
    assert trials == [100]
    assert await credits.verify() == []


async def test_concurrent_duplicate_grants_apply_once(engine):
    credits = Credits(engine)
    results = await asyncio.gather(
        *(credits.grant(TEAM, 500, kind="purchase", source="stripe", external_id="cs_1") for _ in range(10))
    )
    assert sum(result.applied for result in results) == 1
    assert (await credits.balance(TEAM)).balance == 500
    assert await credits.verify() == []


async def test_settle_release_and_sweep_racing_close_each_reservation_once(engine):
    clock = Clock()
    credits = Credits(engine, reservation_ttl=timedelta(minutes=15), clock=clock)
    await credits.grant(TEAM, 1000, kind="grant", source="test", external_id="initial")
    ids = [f"r{i}" for i in range(20)]
    for reservation_id in ids:
        assert isinstance(await credits.reserve(TEAM, "U1", 10, reservation_id), Reservation)
    clock.now += timedelta(minutes=16)

    await asyncio.gather(
        credits.sweep_expired(),
        *(credits.settle(reservation_id, 6) for reservation_id in ids[::2]),
        *(credits.release(reservation_id) for reservation_id in ids[1::2]),
        credits.sweep_expired(),
    )

    async with engine.connect() as connection:
        statuses = (await connection.execute(sa.select(credit_reservations.c.status))).scalars().all()
    assert "held" not in statuses
    balance = await credits.balance(TEAM)
    assert balance.reserved == 0
    # Every settle charged 6: from its hold, or from the available balance after the sweeper won.
    assert balance.balance == 1000 - 6 * 10
    assert await credits.verify() == []
