"""Opening Checkout Sessions against the fake Stripe: parameters, idempotency, errors, what is recorded."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from billing.packs import CreditPack, parse_credit_packs
from billing.stripe_checkout import Checkout, CheckoutError, build_stripe_client
from tests.fakes.stripe import FakeStripe
from tests.test_billing_stripe_harness import (  # noqa: F401  (stripe_harness is a fixture)
    PUBLIC_URL,
    SECRET_KEY,
    TEAM,
    USER,
    billing_settings,
    session_row,
    stripe_harness,
)

pytestmark = pytest.mark.billing


async def test_session_is_created_with_the_packs_price_and_the_teams_references(stripe_harness):
    h = stripe_harness
    link = await h.buy(2000)

    assert link.session_id.startswith("cs_test_")
    assert link.url == h.fake.sessions[link.session_id]["url"]
    received = h.fake.requests[-1]
    assert received.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert received.headers["Idempotency-Key"].startswith("topup-")
    params = received.params
    assert params["mode"] == "payment"
    assert params["line_items"] == [
        {
            "price_data": {"currency": "usd", "unit_amount": "1800", "product_data": {"name": "2,000 credits"}},
            "quantity": "1",
        }
    ]
    assert params["client_reference_id"] == TEAM
    assert params["metadata"] == {"team_id": TEAM, "user_id": USER, "credits": "2000"}
    assert params["payment_intent_data"] == {"metadata": {"team_id": TEAM, "user_id": USER, "credits": "2000"}}
    assert abs(int(params["expires_at"]) - (h.clock.now.timestamp() + 3600)) <= 1
    assert params["success_url"] == f"{PUBLIC_URL}/billing/success?session_id={{CHECKOUT_SESSION_ID}}"
    assert params["cancel_url"] == f"{PUBLIC_URL}/billing/cancel"

    row = await h.session(link.session_id)
    assert (row.team_id, row.user_id, row.credits) == (TEAM, USER, 2000)
    assert (row.amount_total, row.currency, row.status) == (1800, "usd", "open")
    assert row.idempotency_key == received.headers["Idempotency-Key"]
    assert row.payment_intent is None and row.paid_at is None and row.granted_at is None
    assert await h.balance() == 0  # opening a checkout grants nothing


async def test_double_click_opens_one_session(stripe_harness):
    h = stripe_harness
    first = await h.buy(500, request_key="action-42")
    h.clock.advance(seconds=20)  # the second click is later, yet Stripe must see identical parameters
    second = await h.buy(500, request_key="action-42")
    concurrent = await asyncio.gather(*(h.buy(500, request_key="action-42") for _ in range(5)))

    assert {first, second, *concurrent} == {first}
    assert len(h.fake.sessions) == 1
    assert len({r.headers["Idempotency-Key"] for r in h.fake.requests}) == 1
    assert len({r.params["expires_at"] for r in h.fake.requests}) == 1


async def test_other_presses_open_other_sessions(stripe_harness):
    h = stripe_harness
    first = await h.buy(500, request_key="action-42")
    other_pack = await h.buy(2000, request_key="action-42")
    other_user = await h.buy(500, request_key="action-42", user="U0OTHER")
    h.clock.advance(minutes=6)  # the same button pressed again later is a new purchase
    later = await h.buy(500, request_key="action-42")
    assert len({first.session_id, other_pack.session_id, other_user.session_id, later.session_id}) == 4
    assert abs(int(h.fake.requests[-1].params["expires_at"]) - (h.clock.now.timestamp() + 3600)) <= 1


async def test_price_id_packs_send_the_price_and_record_stripes_amount(engine):
    async with FakeStripe(prices={"price_1Pack": (900, "eur")}) as fake, aiohttp.ClientSession() as http:
        settings = billing_settings(fake.api_base, credit_packs="1000:price_1Pack", stripe_currency="eur")
        packs = parse_credit_packs(settings.credit_packs, settings.stripe_currency)
        checkout = Checkout(
            engine, build_stripe_client(settings, http), packs=packs, currency="eur", public_url=PUBLIC_URL + "/"
        )
        link = await checkout.create_session(TEAM, None, packs[0], request_key="k")
        params = fake.requests[-1].params
        assert params["line_items"] == [{"price": "price_1Pack", "quantity": "1"}]
        assert params["metadata"] == {"team_id": TEAM, "credits": "1000"}
        assert params["cancel_url"] == f"{PUBLIC_URL}/billing/cancel"  # no double slash

    row = await session_row(engine, link.session_id)
    assert (row.credits, row.amount_total, row.currency, row.price_id, row.user_id) == (
        1000,
        900,
        "eur",
        "price_1Pack",
        None,
    )


async def test_stripe_error_is_a_clean_checkout_error_and_a_retry_works(stripe_harness, caplog):
    h = stripe_harness
    h.fake.fail_next(status=500, type="api_error", message=f"Internal failure for key {SECRET_KEY}")
    with caplog.at_level(logging.ERROR), pytest.raises(CheckoutError) as raised:
        await h.buy(500, request_key="press")
    error = raised.value
    assert error.temporary is True
    assert error.request_id and error.request_id.startswith("req_")
    assert "try again" in str(error)
    assert SECRET_KEY not in str(error) and "Traceback" not in str(error) and "Internal failure" not in str(error)
    assert error.request_id in caplog.text  # the operator can quote it to Stripe support
    assert h.fake.sessions == {}

    # Stripe replays an error stored under an idempotency key; pressing again must really retry.
    link = await h.buy(500, request_key="press")
    assert link.session_id in h.fake.sessions


async def test_invalid_key_is_a_configuration_error(engine):
    async with FakeStripe() as fake, aiohttp.ClientSession() as http:
        settings = billing_settings(fake.api_base, stripe_secret_key="pk_live_not_a_secret_key")
        packs = parse_credit_packs(settings.credit_packs, "usd")
        checkout = Checkout(
            engine, build_stripe_client(settings, http), packs=packs, currency="usd", public_url=PUBLIC_URL
        )
        with pytest.raises(CheckoutError) as raised:
            await checkout.create_session(TEAM, USER, packs[0], request_key="k")
    assert raised.value.temporary is False
    assert "admin" in str(raised.value) and "pk_live" not in str(raised.value)


async def test_network_retries_use_the_same_idempotency_key(engine):
    async with FakeStripe() as fake, aiohttp.ClientSession() as http:
        settings = billing_settings(fake.api_base, stripe_max_network_retries=1)
        packs = parse_credit_packs(settings.credit_packs, "usd")
        checkout = Checkout(
            engine, build_stripe_client(settings, http), packs=packs, currency="usd", public_url=PUBLIC_URL
        )
        fake.fail_next(status=503, message="Service unavailable")
        link = await checkout.create_session(TEAM, USER, packs[0], request_key="k")
        assert link.session_id in fake.sessions
        assert len(fake.requests) == 2
        assert fake.requests[0].headers["Idempotency-Key"] == fake.requests[1].headers["Idempotency-Key"]


async def test_a_pack_that_is_not_offered_is_refused(stripe_harness):
    with pytest.raises(CheckoutError, match="no longer offered"):
        await stripe_harness.checkout.create_session(
            TEAM, USER, CreditPack(credits=10**6, unit_amount=1, currency="usd"), request_key="k"
        )
    assert stripe_harness.fake.requests == []


def test_stripe_client_settings():
    settings = billing_settings("http://127.0.0.1:9/", stripe_max_network_retries=3)
    client = build_stripe_client(settings)
    options = client._requestor._options
    assert options.base_addresses["api"] == "http://127.0.0.1:9"
    assert options.max_network_retries == 3
    with pytest.raises(ValueError):
        build_stripe_client(billing_settings("http://x", stripe_secret_key=None))


async def test_key_in_use_by_an_earlier_press_is_temporary_and_keeps_the_key(stripe_harness):
    h = stripe_harness
    h.fake.fail_next(
        status=409,
        type="idempotency_error",
        message="There is currently another in-progress request using this Idempotency-Key.",
    )
    with pytest.raises(CheckoutError) as raised:
        await h.buy(500, request_key="press")
    assert raised.value.temporary is True
    await h.buy(500, request_key="press")
    assert h.fake.requests[0].headers["Idempotency-Key"] == h.fake.requests[1].headers["Idempotency-Key"]
