"""Buying credits from Slack, end to end: /credits -> button -> Stripe Checkout -> signed webhook -> DM."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import PUBLIC_URL, TEAM

pytestmark = pytest.mark.billing


def buttons(response: dict) -> list[dict]:
    return [e for b in response.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


def checkout_url(message: dict) -> str:
    for block in message.get("blocks", []):
        accessory = block.get("accessory") or {}
        if accessory.get("url"):
            return accessory["url"]
    raise AssertionError(f"no checkout button in {message}")


async def test_the_whole_buy_flow_from_the_button_grants_once_and_tells_the_buyer(start_bot_on_each_database):
    h = await start_bot_on_each_database(free_credits=0)
    status, overview = await h.command("/credits")
    assert status == 200 and overview["response_type"] == "ephemeral"
    offered = buttons(overview)
    assert [b["value"] for b in offered] == ["500", "2000"]
    assert "5.00 USD" in offered[0]["text"]["text"]

    status, _ = await h.click(offered[0]["action_id"], offered[0]["value"], user="U0001")
    assert status == 200
    await h.responses(1)
    message = h.last_response()
    assert message["response_type"] == "ephemeral"
    (session,) = h.stripe.sessions.values()
    assert checkout_url(message) == session["url"]
    assert session["client_reference_id"] == TEAM
    assert session["metadata"] == {"team_id": TEAM, "user_id": "U0001", "credits": "500"}
    assert session["mode"] == "payment" and session["amount_total"] == 500
    assert session["success_url"].startswith(f"{PUBLIC_URL}/billing/success")
    assert session["cancel_url"] == f"{PUBLIC_URL}/billing/cancel"

    event = h.stripe.complete(session["id"])
    assert (await h.stripe_delivery(event))[0] == 200
    assert (await h.stripe_delivery(event))[0] == 200, "a repeated delivery is acknowledged"
    other_event = h.stripe.async_payment_succeeded(session["id"])
    assert (await h.stripe_delivery(other_event))[0] == 200
    balance = await h.services.credits.balance(TEAM)
    assert balance.balance == 500, "granted once per Checkout Session"
    assert await h.services.credits.verify() == []

    dms = [c for c in h.slack.calls_to("chat.postMessage") if c.params["channel"].startswith("D")]
    assert len(dms) == 1
    assert "500 credits were added" in dms[0].params["text"] and "500 credits" in dms[0].params["text"]
    receipt = h.stripe.charge(session["id"])["receipt_url"]
    assert receipt.startswith("https://pay.stripe.com/receipts/")
    assert f"<{receipt}|Stripe's receipt>" in dms[0].params["text"], "the purchase DM links Stripe's receipt"
    [asked] = [r for r in h.stripe.requests if r.path.startswith("/v1/payment_intents/")]
    assert asked.params == {"expand": ["latest_charge"]}


async def test_a_double_click_opens_one_checkout_session(start_bot_on_each_database):
    h = await start_bot_on_each_database()
    await asyncio.gather(*[h.click("buy_credits_2000", "2000", message_ts="1700000000.000777") for _ in range(2)])
    await h.responses(2)
    assert len(h.stripe.sessions) == 1
    urls = {checkout_url(r[-1]) for r in h.slack.responses.values()}
    assert len(urls) == 1


async def test_credits_buy_command_does_what_the_button_does(start_bot_on_each_database):
    h = await start_bot_on_each_database()
    status, ack = await h.command("/credits", "buy 2000")
    assert status == 200 and ack["response_type"] == "ephemeral"
    await h.responses(1)
    (session,) = h.stripe.sessions.values()
    assert session["amount_total"] == 1800 and session["metadata"]["credits"] == "2000"
    assert checkout_url(h.last_response()) == session["url"]

    _, _unknown = await h.command("/credits", "buy 7")
    await h.responses(2)
    assert "no pack of 7 credits" in h.last_response()["text"]


async def test_only_admins_may_buy_when_configured(start_bot_on_each_database):
    h = await start_bot_on_each_database(credits_buyers="admins")
    h.slack.add_user(TEAM, "U0001", is_admin=False)
    h.slack.add_user(TEAM, "U0ADMIN", is_admin=True)
    await h.click("buy_credits_500", "500", user="U0001")
    await h.responses(1)
    assert "Only workspace admins" in h.last_response()["text"]
    assert h.stripe.sessions == {}

    await h.click("buy_credits_500", "500", user="U0ADMIN", message_ts="1700000000.000999")
    await h.responses(2)
    assert len(h.stripe.sessions) == 1


async def test_a_stripe_error_gets_a_clear_message_and_no_secret(start_bot_on_each_database):
    h = await start_bot_on_each_database()
    h.stripe.fail_next(status=500, type="api_error", message="Internal details sk_test_bot_4242")
    await h.click("buy_credits_500", "500")
    await h.responses(1)
    text = h.last_response()["text"]
    assert "checkout" in text.lower()
    assert "sk_test" not in text and "Internal details" not in text
    assert h.stripe.sessions == {}


async def test_forged_webhooks_change_nothing(start_bot_on_each_database):
    h = await start_bot_on_each_database(free_credits=0)
    await h.command("/credits", "buy 500")
    await h.responses(1)
    (session,) = h.stripe.sessions.values()
    event = h.stripe.complete(session["id"])
    assert (await h.stripe_delivery(event, secret="whsec_forged"))[0] == 400
    assert (await h.stripe_delivery(event, signature=""))[0] == 400
    assert (await h.services.credits.balance(TEAM)).balance == 0


async def test_without_stripe_settings_credits_says_top_ups_are_not_configured(start_bot_on_each_database):
    h = await start_bot_on_each_database(stripe_secret_key=None)
    _, overview = await h.command("/credits")
    assert buttons(overview) == []
    assert "not configured" in str(overview["blocks"])
    async with h.http.post(f"{h.url}/stripe/webhook", data=b"{}") as response:
        assert response.status == 503


async def test_the_return_pages_grant_nothing(start_bot_on_each_database):
    h = await start_bot_on_each_database(free_credits=0)
    for path in ("/billing/success?session_id=cs_test_whatever", "/billing/cancel"):
        async with h.http.get(h.url + path) as response:
            assert response.status == 200
            assert "<html" in (await response.text()).lower()
    assert (await h.services.credits.balance(TEAM)).balance == 0


async def test_refunds_are_reckoned_against_the_purchase_whatever_amount_an_event_claims(start_bot_on_each_database):
    h = await start_bot_on_each_database(free_credits=0)
    await h.command("/credits", "buy 500")
    await h.responses(1)
    (session,) = h.stripe.sessions.values()
    assert (await h.stripe_delivery(h.stripe.complete(session["id"])))[0] == 200
    assert (await h.services.credits.balance(TEAM)).balance == 500

    def refund(amount_refunded: int, claimed_amount: int) -> dict:
        event = h.stripe.refund_event(session["id"], amount_refunded)
        event["data"]["object"]["amount"] = claimed_amount
        return event

    assert (await h.stripe_delivery(refund(250, 500)))[0] == 200
    assert (await h.services.credits.balance(TEAM)).balance == 250, "half refunded: half the credits back"
    # Later events claim another charge amount: the purchase was 500, whatever they say.
    assert (await h.stripe_delivery(refund(250, 0)))[0] == 200
    assert (await h.stripe_delivery(refund(100, 100)))[0] == 200
    assert (await h.stripe_delivery(refund(250, 100)))[0] == 200
    assert (await h.services.credits.balance(TEAM)).balance == 250, "an earlier reversal is neither undone nor widened"
    assert (await h.stripe_delivery(refund(500, 100_000)))[0] == 200
    assert (await h.services.credits.balance(TEAM)).balance == 0, "the whole purchase refunded: all of it back"
    assert (await h.stripe_delivery(refund(0, 0)))[0] == 200
    assert (await h.services.credits.balance(TEAM)).balance == 0
    assert await h.services.credits.verify() == []


async def test_a_receipt_stripe_will_not_give_leaves_the_purchase_dm_without_it(start_bot_on_each_database):
    h = await start_bot_on_each_database(free_credits=0)
    _, overview = await h.command("/credits")
    offer = buttons(overview)[0]
    await h.click(offer["action_id"], offer["value"], user="U0001")
    await h.responses(1)
    (session,) = h.stripe.sessions.values()
    h.stripe.fail_next(404, "invalid_request_error", "No such payment_intent", "resource_missing")
    assert (await h.stripe_delivery(h.stripe.complete(session["id"])))[0] == 200
    await h.idle()
    dms = [c.params["text"] for c in h.slack.calls_to("chat.postMessage") if c.params["channel"].startswith("D")]
    assert len(dms) == 1 and "500 credits were added" in dms[0] and "receipt" not in dms[0]
    assert (await h.services.credits.balance(TEAM)).balance == 500
