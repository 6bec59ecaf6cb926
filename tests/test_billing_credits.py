"""Credits on every database: reserve, settle, release, grants, low balance, usage and verify."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billing import Credits, GrantResult, Insufficient, Reservation, UnknownReservationError
from billing.tables import credit_ledger
from tests.clocks import Clock

pytestmark = pytest.mark.billing

TEAM = "T0001"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def credits(engine, clock) -> Credits:
    return Credits(engine, low_balance_threshold=100, clock=clock)


async def fund(credits: Credits, amount: int, team_id: str = TEAM, ref: str = "initial") -> None:
    result = await credits.grant(team_id, amount, kind="grant", source="test", external_id=f"{team_id}/{ref}")
    assert result.applied


async def ledger_rows(engine, team_id: str = TEAM) -> list:
    async with engine.connect() as connection:
        return (
            await connection.execute(
                sa.select(credit_ledger).where(credit_ledger.c.team_id == team_id).order_by(credit_ledger.c.id)
            )
        ).all()


async def test_reserve_then_settle_charges_what_was_used(credits, engine):
    await fund(credits, 500)
    hold = await credits.reserve(TEAM, "U1", 40, "r1")
    assert hold == Reservation(id="r1", team_id=TEAM, amount=40)
    assert (await credits.balance(TEAM)).available == 460

    settlement = await credits.settle("r1", 25)
    assert (settlement.charged, settlement.balance_after, settlement.already_settled) == (25, 475, False)
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved, balance.available) == (475, 0, 475)

    usage = (await ledger_rows(engine))[-1]
    assert (usage.kind, usage.amount, usage.balance_after, usage.source, usage.external_id, usage.user_id) == (
        "usage",
        -25,
        475,
        "answer",
        "r1",
        "U1",
    )
    assert await credits.verify() == []


async def test_reserve_refuses_more_than_is_available(credits):
    await fund(credits, 50)
    assert isinstance(await credits.reserve(TEAM, "U1", 30, "r1"), Reservation)
    refused = await credits.reserve(TEAM, "U1", 30, "r2")
    assert refused == Insufficient(team_id=TEAM, balance=50, available=20, needed=30)


async def test_reserve_is_idempotent_on_the_reservation_id(credits):
    await fund(credits, 50)
    first = await credits.reserve(TEAM, "U1", 30, "r1")
    again = await credits.reserve(TEAM, "U1", 30, "r1")  # would not fit a second time
    assert again == first
    assert (await credits.balance(TEAM)).reserved == 30


async def test_settling_twice_charges_once(credits):
    await fund(credits, 500)
    await credits.reserve(TEAM, "U1", 40, "r1")
    first = await credits.settle("r1", 25)
    second = await credits.settle("r1", 25)
    assert second.already_settled and not first.already_settled
    assert second.charged == 25  # what the reservation cost, not a new charge
    assert second.balance_after == 475 and not second.low_balance
    assert (await credits.balance(TEAM)).balance == 475
    assert await credits.verify() == []


async def test_charge_is_capped_at_the_reservation(credits, caplog):
    await fund(credits, 500)
    await credits.reserve(TEAM, "U1", 10, "r1")
    with caplog.at_level(logging.WARNING, logger="billing"):
        settlement = await credits.settle("r1", 25)
    assert settlement.charged == 10
    assert (await credits.balance(TEAM)).balance == 490
    assert "exceeds the 10 reserved" in caplog.text


async def test_a_zero_charge_is_recorded_as_an_answer(credits, engine):
    await fund(credits, 500)
    await credits.reserve(TEAM, "U1", 10, "r1")
    settlement = await credits.settle("r1", 0)
    assert settlement.charged == 0 and settlement.balance_after == 500
    assert [(row.kind, row.amount) for row in await ledger_rows(engine)] == [("grant", 500), ("usage", 0)]
    assert (await credits.usage(TEAM)).answers == 1


async def test_release_returns_the_hold_once_and_charges_nothing(credits, engine):
    await fund(credits, 100)
    await credits.reserve(TEAM, "U1", 60, "r1")
    await credits.release("r1")
    await credits.release("r1")
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved) == (100, 0)
    assert [row.kind for row in await ledger_rows(engine)] == ["grant"]  # a release changes no balance
    assert await credits.verify() == []


async def test_settle_after_release_charges_nothing(credits):
    await fund(credits, 100)
    await credits.reserve(TEAM, "U1", 60, "r1")
    await credits.release("r1")
    settlement = await credits.settle("r1", 30)
    assert (settlement.charged, settlement.already_settled, settlement.balance_after) == (0, True, 100)
    assert (await credits.balance(TEAM)).balance == 100
    assert await credits.verify() == []


async def test_release_after_settle_changes_nothing(credits):
    await fund(credits, 100)
    await credits.reserve(TEAM, "U1", 60, "r1")
    await credits.settle("r1", 30)
    await credits.release("r1")
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved) == (70, 0)
    assert await credits.verify() == []


async def test_unknown_reservations_are_an_error(credits):
    with pytest.raises(UnknownReservationError):
        await credits.settle("nope", 5)
    with pytest.raises(UnknownReservationError):
        await credits.release("nope")


async def test_balance_of_an_unknown_team_is_zero_and_creates_nothing(credits, engine):
    balance = await credits.balance("TNEW")
    assert (balance.team_id, balance.balance, balance.reserved, balance.available) == ("TNEW", 0, 0, 0)
    async with engine.connect() as connection:
        assert (await connection.execute(sa.text("SELECT count(*) FROM credit_accounts"))).scalar_one() == 0


async def test_grant_is_once_per_source_and_external_id(credits):
    first = await credits.grant(TEAM, 500, kind="purchase", source="stripe", external_id="cs_1")
    again = await credits.grant(TEAM, 500, kind="purchase", source="stripe", external_id="cs_1")
    other = await credits.grant(TEAM, 200, kind="purchase", source="stripe", external_id="cs_2")
    assert first == GrantResult(applied=True, balance=500)
    assert again == GrantResult(applied=False, balance=500)
    assert other == GrantResult(applied=True, balance=700)
    assert await credits.verify() == []


async def test_grant_rejects_unknown_kinds(credits):
    with pytest.raises(ValueError, match="unknown ledger kind"):
        await credits.grant(TEAM, 5, kind="gift", source="test", external_id="x")


async def test_a_reversal_can_take_the_balance_below_zero_and_then_reserve_refuses(credits):
    await credits.grant(TEAM, 500, kind="purchase", source="stripe", external_id="cs_1")
    await credits.reserve(TEAM, "U1", 450, "r1")
    await credits.settle("r1", 450)
    reversed_ = await credits.grant(TEAM, -500, kind="reversal", source="stripe", external_id="cs_1/adjustment/1")
    assert reversed_ == GrantResult(applied=True, balance=-450)
    refused = await credits.reserve(TEAM, "U1", 1, "r2")
    assert refused == Insufficient(team_id=TEAM, balance=-450, available=-450, needed=1)
    assert await credits.verify() == []


async def test_low_balance_is_reported_once_and_rearmed_by_a_top_up(credits):
    await fund(credits, 150)

    async def answer(ref: str, cost: int):
        await credits.reserve(TEAM, "U1", cost, ref)
        return await credits.settle(ref, cost)

    assert not (await answer("a1", 30)).low_balance  # 120
    crossed = await answer("a2", 30)  # 90
    assert crossed.low_balance and crossed.balance_after == 90
    assert not (await answer("a3", 30)).low_balance  # 60: already told
    assert not (await credits.settle("a2", 30)).low_balance  # a retried settle does not repeat it

    await fund(credits, 10, ref="small")  # 70: still below the threshold, stays quiet
    assert not (await answer("a4", 10)).low_balance  # 60
    await fund(credits, 100, ref="top-up")  # 160: re-armed
    assert not (await answer("a5", 50)).low_balance  # 110
    assert (await answer("a6", 20)).low_balance  # 90


async def test_free_credits_are_granted_once_on_first_sight(engine, clock):
    credits = Credits(engine, free_credits=100, clock=clock)
    assert isinstance(await credits.reserve(TEAM, "U1", 10, "r1"), Reservation)
    await credits.settle("r1", 10)
    await credits.reserve(TEAM, "U1", 10, "r2")
    # Another process (or a restart) sees the workspace again: no second trial.
    await Credits(engine, free_credits=100, clock=clock).reserve(TEAM, "U1", 10, "r3")
    balance = await credits.balance(TEAM)
    assert (balance.balance, balance.reserved) == (90, 20)
    trial = [row for row in await ledger_rows(engine) if row.kind == "trial"]
    assert [(row.amount, row.source, row.external_id) for row in trial] == [(100, "free-credits", TEAM)]


async def test_free_credits_also_reach_a_workspace_whose_account_a_purchase_opened(engine, clock):
    credits = Credits(engine, free_credits=100, clock=clock)
    await credits.grant(TEAM, 500, kind="purchase", source="stripe", external_id="cs_1")
    await credits.reserve(TEAM, "U1", 10, "r1")
    assert (await credits.balance(TEAM)).balance == 600
    assert await credits.verify() == []


async def test_free_credits_granted_at_install_are_not_granted_again_at_the_first_question(engine, clock):
    credits = Credits(engine, free_credits=100, clock=clock)
    assert await credits.grant_free_credits(TEAM) == GrantResult(applied=True, balance=100)
    assert await credits.grant_free_credits(TEAM) == GrantResult(applied=False, balance=100)  # re-install
    await credits.reserve(TEAM, "U1", 10, "r1")
    assert (await credits.balance(TEAM)).balance == 100
    assert await Credits(engine, clock=clock).grant_free_credits("TNEW") == GrantResult(applied=False, balance=0)


async def test_usage_sums_answers_per_user_within_the_window(credits, clock):
    await fund(credits, 1000)
    for ref, user, cost in [
        ("old", "U1", 500),
        ("a", "U1", 30),
        ("b", "U2", 50),
        ("c", "U1", 5),
        ("d", None, 7),
        ("e", "U3", 1),
    ]:
        await credits.reserve(TEAM, user, cost, ref)
        await credits.settle(ref, cost)
        if ref == "old":
            clock.now += timedelta(days=31)
    usage = await credits.usage(TEAM, days=30, top=2)
    assert (usage.total, usage.answers) == (93, 5)
    assert usage.by_user == [("U2", 50), ("U1", 35), (None, 8)]  # the rest: U3's 1 and 7 without a user
    assert (await credits.usage("TNONE")).by_user == []


async def test_history_is_newest_first(credits):
    await fund(credits, 100)
    await credits.reserve(TEAM, "U1", 10, "r1")
    await credits.settle("r1", 4)
    entries = await credits.history(TEAM)
    assert [(entry.kind, entry.amount, entry.balance_after) for entry in entries] == [
        ("usage", -4, 96),
        ("grant", 100, 100),
    ]
    assert entries[0].created_at.tzinfo is not None
    assert len(await credits.history(TEAM, limit=1)) == 1


async def test_verify_reports_tampering_by_team(credits, engine):
    await fund(credits, 100)
    await fund(credits, 100, team_id="T0002")
    await credits.reserve("T0002", "U1", 10, "r1")
    async with engine.begin() as connection:
        await connection.execute(sa.text("UPDATE credit_accounts SET balance = balance + 5 WHERE team_id = 'T0001'"))
        await connection.execute(sa.text("UPDATE credit_accounts SET reserved = 0 WHERE team_id = 'T0002'"))
        await connection.execute(sa.text("UPDATE credit_ledger SET balance_after = 1 WHERE team_id = 'T0002'"))
    differences = await credits.verify()
    assert len(differences) == 3
    assert any(d.startswith("T0001: balance is 105") for d in differences)
    assert any(d.startswith("T0002: reserved is 0") for d in differences)
    assert any(d.startswith("T0002: ledger entry") for d in differences)


async def test_a_new_reservation_holds_in_the_callers_transaction_and_a_reused_id_undoes_it(credits, engine):
    """`new=True` (the caller claimed the id's event in the same transaction): no lookup of an earlier hold,
    and an id used before is an error that rolls the whole transaction back, never a second hold."""
    await fund(credits, 100)
    async with engine.begin() as connection:
        hold = await credits.reserve(TEAM, "U1", 60, "r-new", connection=connection, new=True)
    assert hold == Reservation(id="r-new", team_id=TEAM, amount=60)
    assert (await credits.balance(TEAM)).available == 40

    refused = await credits.reserve(TEAM, "U1", 50, "r-other", new=True)
    assert isinstance(refused, Insufficient) and (refused.available, refused.needed) == (40, 50)

    with pytest.raises(sa.exc.IntegrityError):
        async with engine.begin() as connection:
            await credits.reserve(TEAM, "U1", 10, "r-new", connection=connection, new=True)
    balance = await credits.balance(TEAM)
    assert (balance.reserved, balance.available) == (60, 40), "the failed transaction held nothing"
    assert await credits.verify() == []


async def test_free_credits_are_granted_once_whichever_process_sees_the_workspace_first(engine, clock):
    first, second = (Credits(engine, free_credits=300, clock=clock) for _ in range(2))
    assert isinstance(await first.reserve(TEAM, "U1", 10, "a1", new=True), Reservation)
    for n in range(3):  # the second process finds the account and the grant made: it stops looking after once
        assert isinstance(await second.reserve(TEAM, "U1", 10, f"b{n}", new=True), Reservation)
    assert TEAM in second._accounts_seen and TEAM not in first._accounts_seen
    trial = [row for row in await ledger_rows(engine) if row.kind == "trial"]
    assert [row.amount for row in trial] == [300]
    assert (await credits_balance(engine, clock)).available == 300 - 40


async def credits_balance(engine, clock):
    return await Credits(engine, clock=clock).balance(TEAM)
