"""Refunds and disputes take credits back, once per refunded amount, in whatever order Stripe sends them."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import OperationalError

from billing.stripe_webhook import reversal_target
from tests.test_billing_stripe_harness import TEAM, stripe_harness  # noqa: F401  (fixture)

pytestmark = pytest.mark.billing


async def paid(h, credits: int) -> str:
    link = await h.buy(credits)
    assert (await h.deliver(h.fake.complete(link.session_id)))[0] == 200
    return link.session_id


def test_partial_refunds_round_down_and_full_refunds_take_everything():
    assert reversal_target(2000, 1800, 600, None) == 666  # 666.67: the buyer keeps the fraction
    assert reversal_target(2000, 1800, 1800, None) == 2000
    assert reversal_target(500, 500, 0, None) == 0
    assert reversal_target(500, 500, 100, "open") == 500
    assert reversal_target(500, 500, 100, "lost") == 500
    assert reversal_target(500, 500, 100, "won") == 100


async def test_full_refund_takes_the_credits_back_once(stripe_harness):
    h = stripe_harness
    session_id = await paid(h, 500)
    refund = h.fake.refund_event(session_id, 500)
    assert (await h.deliver(refund))[0] == 200
    assert await h.balance() == 0
    assert await h.deliver(refund) == (200, "duplicate")
    # The same refund described by another event (e.g. charge.refund.updated style) changes nothing either.
    assert (await h.deliver(h.fake.refund_event(session_id, 500)))[0] == 200
    assert await h.balance() == 0
    refunds = [entry for entry in await h.ledger() if entry.kind == "refund"]
    assert [(entry.amount, entry.source) for entry in refunds] == [(-500, "stripe-checkout")]
    assert (await h.session(session_id)).credits_reversed == 500


async def test_partial_refunds_delivered_out_of_order(stripe_harness):
    h = stripe_harness
    session_id = await paid(h, 2000)  # 18.00 USD
    first = h.fake.refund_event(session_id, 600)  # 6.00 refunded
    second = h.fake.refund_event(session_id, 900)  # 3.00 more: running total 9.00
    assert (await h.deliver(second))[0] == 200
    assert await h.balance() == 1000
    assert (await h.deliver(first))[0] == 200  # older total: already covered
    assert await h.balance() == 1000
    assert (await h.deliver(h.fake.refund_event(session_id, 1800)))[0] == 200
    assert await h.balance() == 0
    assert [e.amount for e in await h.ledger() if e.kind == "refund"] == [-1000, -1000]


async def test_concurrent_refund_events_reverse_exactly_the_refunded_share(stripe_harness):
    h = stripe_harness
    session_id = await paid(h, 2000)
    totals = [300, 600, 900, 1200, 600, 300, 900]
    events = [h.fake.refund_event(session_id, total) for total in totals]
    results = await asyncio.gather(*(h.deliver(event) for event in events + events))
    assert {status for status, _ in results} == {200}
    assert await h.balance() == 2000 - 2000 * 1200 // 1800
    assert (await h.session(session_id)).credits_reversed == 1333


async def test_a_refund_may_take_the_balance_below_zero(stripe_harness):
    h = stripe_harness
    session_id = await paid(h, 500)
    await h.credits.grant(TEAM, -400, kind="adjustment", source="test", external_id="spent")  # answers used 400
    assert (await h.deliver(h.fake.refund_event(session_id, 500)))[0] == 200
    assert await h.balance() == -400


async def test_dispute_lost_then_won(stripe_harness):
    h = stripe_harness
    session_id = await paid(h, 500)
    assert (await h.deliver(h.fake.dispute_event(session_id, "created")))[0] == 200
    assert await h.balance() == 0
    assert (await h.deliver(h.fake.dispute_event(session_id, "created")))[0] == 200  # redescribed: no change
    assert await h.balance() == 0
    assert (await h.deliver(h.fake.dispute_event(session_id, "closed", status="won")))[0] == 200
    assert await h.balance() == 500
    assert (await h.deliver(h.fake.dispute_event(session_id, "closed", status="won")))[0] == 200
    assert await h.balance() == 500
    assert [(e.kind, e.amount) for e in await h.ledger()] == [
        ("purchase", 500),
        ("reversal", -500),
        ("adjustment", 500),
    ]


async def test_dispute_lost_keeps_the_credits_reversed(stripe_harness):
    h = stripe_harness
    session_id = await paid(h, 500)
    await h.deliver(h.fake.dispute_event(session_id, "created"))
    await h.deliver(h.fake.dispute_event(session_id, "closed", status="lost"))
    assert await h.balance() == 0
    await h.deliver(h.fake.dispute_event(session_id, "created"))  # a late redelivery does not reopen it
    assert await h.balance() == 0


async def test_dispute_closed_before_created_is_delivered(stripe_harness):
    h = stripe_harness
    session_id = await paid(h, 500)
    created, won = h.fake.dispute_event(session_id, "created"), h.fake.dispute_event(session_id, "closed", status="won")
    await h.deliver(won)
    await h.deliver(created)
    assert await h.balance() == 500
    assert [e.kind for e in await h.ledger()] == ["purchase"]


async def test_dispute_reverses_the_rest_after_a_partial_refund_and_a_win_keeps_the_refund(stripe_harness):
    h = stripe_harness
    session_id = await paid(h, 2000)
    await h.deliver(h.fake.refund_event(session_id, 900))
    assert await h.balance() == 1000
    await h.deliver(h.fake.dispute_event(session_id, "created"))
    assert await h.balance() == 0
    await h.deliver(h.fake.dispute_event(session_id, "closed", status="won"))
    assert await h.balance() == 1000


async def test_refund_delivered_before_the_purchase_is_applied_when_it_arrives(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    completed = h.fake.complete(link.session_id)
    status, text = await h.deliver(h.fake.refund_event(link.session_id, 500))
    assert status == 200 and "no purchase known" in text
    assert await h.ledger() == []
    await h.deliver(completed)
    assert await h.balance() == 0
    assert [(e.kind, e.amount) for e in await h.ledger()] == [("purchase", 500), ("refund", -500)]


async def test_a_crash_between_claiming_and_booking_a_reversal_is_finished_by_the_retry(stripe_harness, monkeypatch):
    h = stripe_harness
    session_id = await paid(h, 500)
    refund = h.fake.refund_event(session_id, 500)
    real_grant = h.credits.grant

    async def connection_lost(*args, **kwargs):
        raise OperationalError("INSERT INTO credit_ledger ...", {}, Exception("connection reset"))

    monkeypatch.setattr(h.credits, "grant", connection_lost)
    assert (await h.deliver(refund))[0] == 500
    assert await h.balance() == 500
    row = await h.session(session_id)
    assert (row.credits_reversed, row.pending_adjustment) == (500, -500)  # claimed, not yet booked

    monkeypatch.setattr(h.credits, "grant", real_grant)
    assert (await h.deliver(refund))[0] == 200
    assert await h.balance() == 0
    assert (await h.deliver(h.fake.refund_event(session_id, 500)))[0] == 200
    assert await h.balance() == 0
    assert (await h.session(session_id)).pending_adjustment == 0


async def test_refunds_of_charges_this_app_did_not_create_are_ignored(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    event = h.fake.refund_event(link.session_id, 500)
    event["data"]["object"]["payment_intent"] = "pi_not_ours"
    status, _ = await h.deliver(event)
    assert status == 200 and await h.ledger() == []
