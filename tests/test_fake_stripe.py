"""The fake speaks Stripe's wire format well enough for the real SDK (and its webhook verifier) to accept it."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
import stripe

from tests.fakes.stripe import FakeStripe, parse_stripe_form, sign

pytestmark = pytest.mark.billing

SECRET_KEY = "sk_test_fake_0123456789"
WEBHOOK_SECRET = "whsec_fake_secret"


def session_params(**overrides):
    params = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "500 credits"}},
                "quantity": 1,
            }
        ],
        "client_reference_id": "T1",
        "metadata": {"team_id": "T1", "credits": "500"},
        "expires_at": int(time.time()) + 3600,
        "success_url": "https://bot.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://bot.example.com/billing/cancel",
    }
    params.update(overrides)
    return params


@pytest.fixture
async def fake():
    async with FakeStripe(prices={"price_ABC": (1800, "usd")}) as fake:
        yield fake


@pytest.fixture
async def client(fake):
    async with aiohttp.ClientSession() as session:
        yield stripe.StripeClient(
            SECRET_KEY, base_addresses={"api": fake.api_base}, http_client=stripe.AIOHTTPClient(session=session)
        )


def test_form_encoding_becomes_nested_dicts_and_lists():
    pairs = [
        ("line_items[0][price_data][unit_amount]", "500"),
        ("line_items[0][quantity]", "1"),
        ("line_items[1][price]", "price_X"),
        ("metadata[team_id]", "T1"),
        ("mode", "payment"),
    ]
    assert parse_stripe_form(pairs) == {
        "line_items": [{"price_data": {"unit_amount": "500"}, "quantity": "1"}, {"price": "price_X"}],
        "metadata": {"team_id": "T1"},
        "mode": "payment",
    }


async def test_create_returns_a_checkout_session(fake, client):
    session = await client.v1.checkout.sessions.create_async(session_params())
    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert (session.mode, session.status, session.payment_status) == ("payment", "open", "unpaid")
    assert (session.amount_total, session.currency, session.client_reference_id) == (500, "usd", "T1")
    assert session.payment_intent is None and session.livemode is False
    assert session.url.startswith("https://checkout.stripe.com/")
    received = fake.requests[-1]
    assert received.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert received.params["line_items"][0]["price_data"]["unit_amount"] == "500"
    assert received.params["metadata"] == {"team_id": "T1", "credits": "500"}


async def test_price_ids_are_priced_by_the_fake(client):
    session = await client.v1.checkout.sessions.create_async(
        session_params(line_items=[{"price": "price_ABC", "quantity": 2}])
    )
    assert session.amount_total == 3600
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.checkout.sessions.create_async(
            session_params(line_items=[{"price": "price_nope", "quantity": 1}])
        )
    assert raised.value.code == "resource_missing"


async def test_expires_at_outside_stripes_window_is_refused(client):
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.checkout.sessions.create_async(session_params(expires_at=int(time.time()) + 600))


async def test_wrong_key_is_a_401_in_stripes_error_shape(fake):
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake.api_base}/v1/checkout/sessions", headers={"Authorization": "Bearer nope"}) as response,
    ):
        assert response.status == 401
        assert response.headers["Request-Id"].startswith("req_")
        body = await response.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert "Invalid API Key" in body["error"]["message"]

    async with aiohttp.ClientSession() as session:
        client = stripe.StripeClient(
            "pk_test_wrong", base_addresses={"api": fake.api_base}, http_client=stripe.AIOHTTPClient(session=session)
        )
        with pytest.raises(stripe.AuthenticationError):
            await client.v1.checkout.sessions.create_async(session_params())


async def test_same_idempotency_key_replays_the_same_session(fake):
    headers = {"Authorization": f"Bearer {SECRET_KEY}", "Idempotency-Key": "key-1"}
    form = {
        "mode": "payment",
        "success_url": "https://x/s",
        "expires_at": str(int(time.time()) + 3600),
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "500",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fake.api_base}/v1/checkout/sessions", data=form, headers=headers) as first:
            first_body = await first.json()
            assert "Idempotent-Replayed" not in first.headers
        async with http.post(f"{fake.api_base}/v1/checkout/sessions", data=form, headers=headers) as second:
            assert second.headers["Idempotent-Replayed"] == "true"
            assert (await second.json())["id"] == first_body["id"]
    assert len(fake.sessions) == 1


async def test_reused_idempotency_key_with_other_params_is_an_idempotency_error(client):
    await client.v1.checkout.sessions.create_async(session_params(), options={"idempotency_key": "k"})
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.checkout.sessions.create_async(
            session_params(client_reference_id="T2"), options={"idempotency_key": "k"}
        )


async def test_fail_next_raises_the_sdk_error_with_request_id(fake, client):
    fake.fail_next(status=500, type="api_error", message="Something broke")
    with pytest.raises(stripe.APIError) as raised:
        await client.v1.checkout.sessions.create_async(session_params())
    assert raised.value.http_status == 500
    assert raised.value.request_id.startswith("req_")
    assert raised.value.user_message == "Something broke"
    assert fake.sessions == {}
    await client.v1.checkout.sessions.create_async(session_params())  # only the next request failed


async def test_events_are_signed_like_stripe_and_verify_with_the_sdk(fake, client):
    session = await client.v1.checkout.sessions.create_async(session_params())
    event = fake.complete(session.id)
    assert event["id"].startswith("evt_") and event["object"] == "event"
    assert event["type"] == "checkout.session.completed"
    obj = event["data"]["object"]
    assert (obj["id"], obj["payment_status"], obj["status"]) == (session.id, "paid", "complete")
    assert obj["payment_intent"].startswith("pi_")
    assert not any(key.startswith("_") for key in obj)

    payload = json.dumps(event).encode()
    verified = stripe.Webhook.construct_event(payload, sign(payload, WEBHOOK_SECRET), WEBHOOK_SECRET)
    assert verified.id == event["id"]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign(payload, "whsec_other"), WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign(payload, WEBHOOK_SECRET, int(time.time()) - 600), WEBHOOK_SECRET)


async def test_charge_and_dispute_events_point_at_the_sessions_payment_intent(fake, client):
    session = await client.v1.checkout.sessions.create_async(session_params())
    payment_intent = fake.complete(session.id)["data"]["object"]["payment_intent"]

    refund = fake.refund_event(session.id, 200)["data"]["object"]
    assert (refund["object"], refund["amount"], refund["amount_refunded"]) == ("charge", 500, 200)
    assert refund["payment_intent"] == payment_intent and refund["refunded"] is False
    assert fake.refund_event(session.id, 500)["data"]["object"]["refunded"] is True

    created = fake.dispute_event(session.id, "created")
    closed = fake.dispute_event(session.id, "closed", status="won")
    assert created["type"] == "charge.dispute.created" and closed["type"] == "charge.dispute.closed"
    assert created["data"]["object"]["status"] == "needs_response"
    assert closed["data"]["object"]["status"] == "won"
    assert created["data"]["object"]["id"] == closed["data"]["object"]["id"]
    assert created["data"]["object"]["payment_intent"] == payment_intent
