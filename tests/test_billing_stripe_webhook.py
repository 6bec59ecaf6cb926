"""Purchases over the real webhook route: signed deliveries, duplicates, concurrency, order, failures."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.exc import OperationalError

from billing.stripe_web import stripe_routes
from tests.test_billing_stripe_harness import TEAM, USER, stripe_harness  # noqa: F401  (fixture)

pytestmark = pytest.mark.billing


def purchases(ledger):
    return [entry for entry in ledger if entry.kind == "purchase"]


async def test_completed_and_paid_grants_the_pack_once_and_tells_the_buyer(stripe_harness):
    h = stripe_harness
    link = await h.buy(2000)
    event = h.fake.complete(link.session_id)

    assert await h.deliver(event) == (200, f"granted 2000 credits to {TEAM}")
    assert await h.balance() == 2000
    [entry] = await h.ledger()
    assert (entry.kind, entry.amount, entry.source, entry.external_id, entry.user_id) == (
        "purchase",
        2000,
        "stripe-checkout",
        link.session_id,
        USER,
    )
    assert h.notifier.granted == [(TEAM, USER, 2000, 2000)]
    row = await h.session(link.session_id)
    assert row.status == "paid" and row.paid_at and row.granted_at
    assert row.payment_intent == event["data"]["object"]["payment_intent"]

    assert await h.deliver(event) == (200, "duplicate")  # Stripe redelivers the same event
    assert await h.balance() == 2000 and len(await h.ledger()) == 1
    assert len(h.notifier.granted) == 1


async def test_concurrent_deliveries_of_one_event_grant_once(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    event = h.fake.complete(link.session_id)
    results = await asyncio.gather(*(h.deliver(event) for _ in range(10)))
    assert {status for status, _ in results} == {200}
    assert await h.balance() == 500
    assert len(purchases(await h.ledger())) == 1
    assert len(h.notifier.granted) == 1


async def test_different_events_for_one_session_grant_once_even_concurrently(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    completed = h.fake.complete(link.session_id)
    succeeded = h.fake.async_payment_succeeded(link.session_id)
    redelivered = [completed, succeeded] * 5
    results = await asyncio.gather(*(h.deliver(event) for event in redelivered))
    assert {status for status, _ in results} == {200}
    assert await h.balance() == 500
    assert len(purchases(await h.ledger())) == 1
    assert len(h.notifier.granted) == 1


async def test_async_payment_succeeded_before_completed(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    succeeded = h.fake.async_payment_succeeded(link.session_id)
    completed = h.fake.complete(link.session_id)
    assert (await h.deliver(succeeded))[0] == 200
    assert await h.deliver(completed) == (200, "already granted")
    assert await h.balance() == 500 and len(h.notifier.granted) == 1


async def test_unpaid_completion_waits_for_the_delayed_payment(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    assert await h.deliver(h.fake.complete(link.session_id, paid=False)) == (200, "awaiting payment")
    assert await h.balance() == 0 and h.notifier.granted == []
    assert (await h.session(link.session_id)).status == "unpaid"

    assert (await h.deliver(h.fake.async_payment_succeeded(link.session_id)))[0] == 200
    assert await h.balance() == 500
    assert h.notifier.granted == [(TEAM, USER, 500, 500)]


async def test_failed_delayed_payment_tells_the_buyer_once_and_grants_nothing(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    await h.deliver(h.fake.complete(link.session_id, paid=False))
    first, second = h.fake.async_payment_failed(link.session_id), h.fake.async_payment_failed(link.session_id)
    assert await h.deliver(first) == (200, "payment failed")
    assert (await h.deliver(second))[0] == 200  # another event for the same failure: no second DM
    assert h.notifier.failed == [(TEAM, USER)]
    assert await h.balance() == 0 and await h.ledger() == []
    assert (await h.session(link.session_id)).status == "failed"


async def test_amount_mismatch_grants_nothing(stripe_harness, caplog):
    h = stripe_harness
    link = await h.buy(2000)
    event = h.fake.complete(link.session_id)
    event["data"]["object"]["amount_total"] = 500  # 2000 credits for the price of 500
    with caplog.at_level(logging.ERROR):
        assert await h.deliver(event) == (200, "amount mismatch")
    assert await h.balance() == 0 and h.notifier.granted == []
    assert (await h.session(link.session_id)).status == "mismatch"
    assert link.session_id in caplog.text

    other = h.fake.async_payment_succeeded(link.session_id)
    other["data"]["object"]["currency"] = "eur"
    assert await h.deliver(other) == (200, "amount mismatch")
    assert await h.balance() == 0


async def test_unknown_session_grants_nothing(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    event = h.fake.complete(link.session_id)
    event["data"]["object"]["id"] = "cs_test_someone_elses_session"
    assert await h.deliver(event) == (200, "unknown session")
    assert await h.ledger() == [] and h.notifier.granted == []


@pytest.mark.parametrize("tamper", ["forged", "stale", "unsigned", "garbage header", "changed body", "not json"])
async def test_unverifiable_deliveries_are_rejected_and_change_nothing(stripe_harness, tamper):
    h = stripe_harness
    link = await h.buy(500)
    event = h.fake.complete(link.session_id)
    if tamper == "forged":
        result = await h.deliver(event, secret="whsec_attacker")
    elif tamper == "stale":
        result = await h.deliver(event, timestamp=int(time.time()) - 600)
    elif tamper == "unsigned":
        result = await h.deliver(event, signature=None)
    elif tamper == "garbage header":
        result = await h.deliver(event, signature="t=abc,v1=nothex")
    elif tamper == "changed body":
        from tests.fakes.stripe import sign

        genuine = json.dumps(event).encode()
        result = await h.deliver(
            genuine.replace(b'"amount_total": 500', b'"amount_total": 5'),
            signature=sign(genuine, "whsec_harness_secret"),
        )
    else:
        result = await h.deliver(b"{not json")
    assert result[0] == 400
    assert await h.ledger() == [] and await h.events_recorded() == 0
    assert (await h.session(link.session_id)).status == "open"


async def test_unknown_event_types_are_acknowledged(stripe_harness):
    h = stripe_harness
    event = h.fake.event("customer.created", {"id": "cus_1", "object": "customer"})
    assert await h.deliver(event) == (200, "ignored")
    assert await h.deliver(event) == (200, "duplicate")


async def test_expired_session_is_marked(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    assert await h.deliver(h.fake.expire(link.session_id)) == (200, "expired")
    assert (await h.session(link.session_id)).status == "expired"


async def test_database_failure_is_a_500_and_the_redelivery_grants_once(stripe_harness, monkeypatch):
    h = stripe_harness
    link = await h.buy(500)
    event = h.fake.complete(link.session_id)
    real_grant = h.credits.grant

    async def broken_grant(*args, **kwargs):
        raise OperationalError("UPDATE credit_accounts ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(h.credits, "grant", broken_grant)
    assert (await h.deliver(event))[0] == 500
    assert await h.events_recorded() == 0  # not marked as processed: Stripe's retry must do the work

    monkeypatch.setattr(h.credits, "grant", real_grant)
    assert (await h.deliver(event))[0] == 200
    assert await h.balance() == 500 and len(h.notifier.granted) == 1


async def test_a_failing_notifier_does_not_fail_the_webhook(stripe_harness, caplog):
    h = stripe_harness
    h.notifier.fail = True
    link = await h.buy(500)
    with caplog.at_level(logging.ERROR):
        assert (await h.deliver(h.fake.complete(link.session_id)))[0] == 200
    assert await h.balance() == 500
    assert "Could not tell the buyer" in caplog.text


async def test_success_and_cancel_pages_are_friendly_and_grant_nothing(stripe_harness):
    h = stripe_harness
    link = await h.buy(500)
    success = await h.http.get(f"/billing/success?session_id={link.session_id}")
    assert success.status == 200 and success.content_type == "text/html"
    text = await success.text()
    assert "Slack" in text and "credits" in text.lower()
    cancel = await h.http.get("/billing/cancel")
    assert cancel.status == 200 and "Nothing was charged" in await cancel.text()
    assert await h.ledger() == [] and (await h.session(link.session_id)).status == "open"


async def test_webhook_without_stripe_configured_is_503():
    app = web.Application()
    app.add_routes(stripe_routes(None))
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/stripe/webhook", data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
        assert response.status == 503
        assert "not configured" in await response.text()
        assert (await client.get("/billing/cancel")).status == 200
