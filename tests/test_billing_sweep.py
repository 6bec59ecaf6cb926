"""The sweeper: holds the bot never settled go back after their TTL; a late settle still charges once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing import Credits, Reservation
from tests.clocks import Clock

pytestmark = pytest.mark.billing

TEAM = "T0001"
TTL = timedelta(minutes=15)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def credits(engine, clock) -> Credits:
    credits = Credits(engine, reservation_ttl=TTL, low_balance_threshold=10, clock=clock)
    await credits.grant(TEAM, 100, kind="grant", source="test", external_id="initial")
    return credits


async def test_sweep_waits_for_the_ttl(credits, clock):
    await credits.reserve(TEAM, "U1", 40, "r1")
    clock.now += TTL - timedelta(seconds=1)
    assert await credits.sweep_expired() == 0
    assert (await credits.balance(TEAM)).reserved == 40


async def test_sweep_returns_expired_holds_and_records_why(credits, clock):
    await credits.reserve(TEAM, "U1", 40, "r1")
    clock.now += TTL + timedelta(seconds=1)
    assert await credits.sweep_expired() == 1
    assert await credits.sweep_expired() == 0

    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved, balance.available) == (100, 0, 100)
    release = (await credits.history(TEAM))[0]
    assert (
        release.kind,
        release.amount,
        release.balance_after,
        release.source,
        release.external_id,
        release.user_id,
    ) == (
        "release",
        0,
        100,
        "reservation-expired",
        "r1",
        "U1",
    )
    assert "40 credits" in release.memo and "not settled" in release.memo
    assert await credits.verify() == []


async def test_a_settle_after_the_sweep_charges_at_most_what_is_available_once(credits, clock):
    await credits.reserve(TEAM, "U1", 40, "late")
    clock.now += TTL + timedelta(seconds=1)
    assert await credits.sweep_expired() == 1
    assert isinstance(await credits.reserve(TEAM, "U2", 70, "other"), Reservation)  # available now 30

    settlement = await credits.settle("late", 40)
    assert (settlement.charged, settlement.balance_after, settlement.already_settled) == (30, 70, False)
    again = await credits.settle("late", 40)
    assert again.already_settled and again.charged == 30
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved, balance.available) == (70, 70, 0)
    usage = (await credits.history(TEAM))[0]
    assert (usage.kind, usage.amount, usage.external_id) == ("usage", -30, "late")
    assert "expired" in usage.memo
    assert await credits.verify() == []


async def test_a_settle_after_the_sweep_within_the_available_balance_charges_in_full(credits, clock):
    await credits.reserve(TEAM, "U1", 40, "late")
    clock.now += TTL + timedelta(minutes=5)
    await credits.sweep_expired()
    settlement = await credits.settle("late", 25)
    assert (settlement.charged, settlement.balance_after) == (25, 75)
    assert await credits.verify() == []


async def test_a_late_settle_never_charges_a_negative_balance(credits, clock):
    await credits.reserve(TEAM, "U1", 40, "late")
    clock.now += TTL + timedelta(seconds=1)
    await credits.sweep_expired()
    await credits.grant(TEAM, -150, kind="reversal", source="test", external_id="refund")  # balance -50
    settlement = await credits.settle("late", 25)
    assert (settlement.charged, settlement.balance_after) == (0, -50)
    assert await credits.verify() == []


async def test_release_after_the_sweep_changes_nothing(credits, clock):
    await credits.reserve(TEAM, "U1", 40, "r1")
    clock.now += TTL + timedelta(seconds=1)
    await credits.sweep_expired()
    await credits.release("r1")
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved) == (100, 0)
    assert await credits.verify() == []
