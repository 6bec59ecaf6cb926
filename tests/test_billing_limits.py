"""Spending limits on every database: what counts toward them, calendar periods in UTC, and concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from billing import Credits, OverLimit, Reservation, SpendingLimit
from billing.limits import period_end, period_start
from tests.clocks import Clock

pytestmark = pytest.mark.billing

TEAM = "T0LIM"


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 12, 31, 23, 0, tzinfo=UTC))


@pytest.fixture
async def credits(engine, clock) -> Credits:
    credits = Credits(engine, low_balance_threshold=0, clock=clock)
    await credits.grant(TEAM, 100_000, kind="grant", source="test", external_id="initial")
    return credits


def test_periods_are_calendar_days_and_months_in_utc():
    late = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_start("day", late) == datetime(2026, 12, 31, tzinfo=UTC)
    assert period_end("day", late) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start("month", late) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end("month", late) == datetime(2027, 1, 1, tzinfo=UTC)
    # 9 pm on Feb 28 in New York is already March 1 in UTC: the period is March's.
    evening_in_new_york = datetime(2026, 3, 1, 2, 0, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert evening_in_new_york.day == 28
    assert period_start("month", evening_in_new_york) == datetime(2026, 3, 1, tzinfo=UTC)
    assert period_end("month", evening_in_new_york) == datetime(2026, 4, 1, tzinfo=UTC)


async def test_holds_count_at_their_amount_and_settled_answers_at_their_charge(credits, clock):
    await credits.set_limit(TEAM, SpendingLimit("user", "U1", 100, "day"))
    first = await credits.reserve(TEAM, "U1", 60, "r1", channel_id="C1")
    assert isinstance(first, Reservation)
    over = await credits.reserve(TEAM, "U1", 60, "r2", channel_id="C1")
    assert isinstance(over, OverLimit) and (over.used, over.needed, over.limit.credits) == (60, 60, 100)
    assert over.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert (await credits.balance(TEAM)).reserved == 60, "a refused reservation holds nothing"

    await credits.settle("r1", 10)  # only what was charged counts once settled
    assert isinstance(await credits.reserve(TEAM, "U1", 60, "r3"), Reservation)
    assert isinstance(await credits.reserve(TEAM, "U2", 100, "r4"), Reservation), "someone else's limit is not U1's"

    clock.now += timedelta(hours=1)  # a new UTC day
    assert isinstance(await credits.reserve(TEAM, "U1", 100, "r5"), Reservation)


async def test_a_users_own_limit_replaces_the_default_and_a_channel_limit_applies_on_top(credits):
    await credits.set_limit(TEAM, SpendingLimit("default", "", 50, "month"))
    await credits.set_limit(TEAM, SpendingLimit("user", "UBIG", 500, "month"))
    await credits.set_limit(TEAM, SpendingLimit("channel", "CSMALL", 80, "day"))
    over = await credits.reserve(TEAM, "U1", 51, "d1", channel_id="C1")
    assert isinstance(over, OverLimit) and over.limit.scope == "default"
    assert isinstance(await credits.reserve(TEAM, "UBIG", 70, "b1", channel_id="CSMALL"), Reservation)
    over = await credits.reserve(TEAM, "UBIG", 20, "b2", channel_id="CSMALL")
    assert isinstance(over, OverLimit) and (over.limit.scope, over.used) == ("channel", 70)
    assert isinstance(await credits.reserve(TEAM, "UBIG", 20, "b3", channel_id="C1"), Reservation)

    listed = {(limit.scope, limit.subject): used for limit, used in await credits.limits(TEAM)}
    assert listed == {("default", ""): None, ("user", "UBIG"): 90, ("channel", "CSMALL"): 70}
    assert await credits.remove_limit(TEAM, "default", "") is True
    assert await credits.remove_limit(TEAM, "default", "") is False
    assert isinstance(await credits.reserve(TEAM, "U1", 51, "d2", channel_id="C1"), Reservation)


async def test_concurrent_reservations_never_overrun_a_limit(engine, clock):
    # Separate Credits objects (as separate processes would be), each reserving on its own connection.
    workers = [Credits(engine, low_balance_threshold=0, clock=clock) for _ in range(4)]
    await workers[0].grant(TEAM, 100_000, kind="grant", source="test", external_id="initial")
    await workers[0].set_limit(TEAM, SpendingLimit("user", "U1", 50, "day"))
    results = await asyncio.gather(
        *(workers[i % 4].reserve(TEAM, "U1", 10, f"c{i}", channel_id="C1") for i in range(20)), return_exceptions=True
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(isinstance(r, Reservation) for r in results) == 5
    assert sum(isinstance(r, OverLimit) for r in results) == 15
    assert (await workers[0].balance(TEAM)).reserved == 50
    assert await workers[0].verify() == []
