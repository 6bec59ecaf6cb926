"""Auto-reload end to end: an admin sets the rule with /credits, the next Checkout purchase saves the card
(a Customer per workspace, setup_future_usage=off_session), and a settlement that leaves too few credits
confirms one off-session PaymentIntent; credits arrive only with its verified webhook, once. Failures turn
auto-reload off and tell the admin; refunds of a reload reverse it like any purchase."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import TEAM
from tests.test_top_up_e2e import buttons

pytestmark = pytest.mark.billing

ADMIN, MEMBER = "UADMIN", "U0001"


async def start(start_bot, **overrides):
    h = await start_bot(ai_credits_per_message=100, free_credits=0, low_balance_threshold=0, **overrides)
    h.slack.add_user(TEAM, ADMIN, is_admin=True, name="admin")
    h.slack.add_user(TEAM, MEMBER, name="member")
    return h


async def command(h, text: str, user: str = ADMIN) -> str:
    status, body = await h.command("/credits", text, user=user)
    assert status == 200, body
    return body["text"]


async def buy(h, user: str = ADMIN) -> dict:
    _, overview = await h.command("/credits", user=user)
    offer = buttons(overview)[0]  # 500 credits for 5.00 USD
    sent = sum(len(posts) for posts in h.slack.responses.values())
    await h.click(offer["action_id"], offer["value"], user=user)
    await h.responses(sent + 1)
    session = list(h.stripe.sessions.values())[-1]
    assert (await h.stripe_delivery(h.stripe.complete(session["id"])))[0] == 200
    return session


async def ask(h, n: int, *, concurrently: bool = False) -> None:
    if concurrently:
        await asyncio.gather(*(h.mention(f"q{i}", user=MEMBER, channel=f"C7{i:02d}") for i in range(n)))
        await h.idle(timeout=60)
        return
    for i in range(n):
        await h.mention(f"q{i}", user=MEMBER, channel=f"C7{i:02d}")
        await h.idle()


async def until(condition, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def dms_to(h, user: str) -> list[str]:
    return [c.params["text"] for c in h.slack.calls_to("chat.postMessage") if c.params["channel"] == f"D{user[1:]}"]


async def balance(h) -> int:
    return (await h.services.credits.balance(TEAM)).balance


async def test_the_first_purchase_saves_the_card_and_a_low_balance_buys_the_pack_once_per_webhook(
    start_bot_on_each_database,
):
    h = await start(start_bot_on_each_database)
    assert "Only workspace admins" in await command(h, "autoreload below 300 buy 500 max 2", user=MEMBER)
    assert "There is no 700-credit pack" in await command(h, "autoreload below 300 buy 700")
    reply = await command(h, "autoreload below 300 buy 500 max 2")
    assert "fewer than *300*" in reply and "*500*" in reply and "No card is saved yet" in reply

    session = await buy(h)
    assert session["customer"].startswith("cus_") and h.stripe.customers[session["customer"]]["metadata"] == {
        "team_id": TEAM
    }
    [created] = [r for r in h.stripe.requests if r.path == "/v1/checkout/sessions"]
    assert created.params["payment_intent_data"]["setup_future_usage"] == "off_session"
    assert "No card is saved" not in await command(h, "autoreload")
    assert await balance(h) == 500

    await ask(h, 3)  # 500 -> 400 -> 300 -> 200: the third leaves fewer than 300 available
    await until(lambda: len(h.stripe.payment_intents) == 1)
    [intent] = h.stripe.payment_intents.values()
    assert (intent["amount"], intent["currency"], intent["customer"]) == (500, "usd", session["customer"])
    assert intent["metadata"]["team_id"] == TEAM and intent["metadata"]["credits"] == "500"
    [request] = [r for r in h.stripe.requests if r.path == "/v1/payment_intents"]
    assert request.params["off_session"] == "true" and request.params["confirm"] == "true"
    assert request.headers["Idempotency-Key"] == intent["metadata"]["auto_reload"]
    assert await balance(h) == 200, "nothing is granted before Stripe's webhook"

    event = h.stripe.payment_intent_event(intent["id"])
    assert (await h.stripe_delivery(event))[0] == 200
    assert (await h.stripe_delivery(h.stripe.payment_intent_event(intent["id"])))[0] == 200  # a second delivery
    assert await balance(h) == 700
    await until(lambda: any("500 credits were added" in text for text in dms_to(h, ADMIN)[1:]))
    assert "pay.stripe.com/receipts" in dms_to(h, ADMIN)[-1]

    await ask(h, 5)  # 700 -> 200: the second reload of the month
    await until(lambda: len(h.stripe.payment_intents) == 2)
    second = list(h.stripe.payment_intents)[-1]
    assert (await h.stripe_delivery(h.stripe.payment_intent_event(second)))[0] == 200
    await ask(h, 6)  # 700 -> 100: the monthly maximum (2) is reached
    await asyncio.sleep(0.3)
    assert len(h.stripe.payment_intents) == 2
    assert await balance(h) == 100
    assert await h.services.credits.verify() == []


async def test_concurrent_settlements_start_one_reload(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await command(h, "autoreload below 1000 buy 500 max 5")
    await buy(h)
    await ask(h, 4, concurrently=True)  # every settlement leaves fewer than 1,000 available
    await h.idle()
    await asyncio.sleep(0.3)
    assert len(h.stripe.payment_intents) == 1, "never two reloads in flight"
    [intent] = h.stripe.payment_intents
    assert (await h.stripe_delivery(h.stripe.payment_intent_event(intent)))[0] == 200
    assert await balance(h) == 500 - 400 + 500


@pytest.mark.parametrize(
    "outcome, why", [("card_declined", "declined"), ("authentication_required", "confirm the payment")]
)
async def test_a_failed_reload_turns_auto_reload_off_and_tells_the_admin_once(start_bot_on_each_database, outcome, why):
    h = await start(start_bot_on_each_database)
    await command(h, "autoreload below 450 buy 500")
    await buy(h)
    h.stripe.next_off_session_outcome = outcome
    await ask(h, 1)  # 500 -> 400
    await until(lambda: any("Auto-reload couldn't buy" in text for text in dms_to(h, ADMIN)))
    [intent] = h.stripe.payment_intents.values()
    assert intent["status"] in ("requires_payment_method", "requires_action")
    assert (await h.stripe_delivery(h.stripe.payment_intent_event(intent["id"])))[0] == 200  # payment_failed
    await asyncio.sleep(0.2)
    told = [text for text in dms_to(h, ADMIN) if "Auto-reload couldn't buy" in text]
    assert len(told) == 1 and why in told[0] and "Buy 500 credits by hand>" in told[0]
    link = list(h.stripe.sessions.values())[-1]
    assert f"<{link['url']}|" in told[0] and link["metadata"]["user_id"] == ADMIN, "a Checkout page to buy by hand"
    assert link["_setup_future_usage"] == "off_session", "which saves a new card"
    assert "Auto-reload is off" in await command(h, "autoreload")
    await ask(h, 1)
    await asyncio.sleep(0.2)
    assert len(h.stripe.payment_intents) == 1, "off after a failure"
    assert await balance(h) == 300

    assert (await h.stripe_delivery(h.stripe.complete(link["id"])))[0] == 200  # bought by hand: a new card saved
    assert "No card is saved" not in await command(h, "autoreload below 450 buy 500")
    assert await balance(h) == 800


async def test_a_refunded_reload_is_reversed_like_any_purchase(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await command(h, "autoreload below 450 buy 500")
    await buy(h)
    await ask(h, 1)
    await until(lambda: len(h.stripe.payment_intents) == 1)
    [intent] = h.stripe.payment_intents
    assert (await h.stripe_delivery(h.stripe.payment_intent_event(intent)))[0] == 200
    assert await balance(h) == 900
    assert (await h.stripe_delivery(h.stripe.intent_refund_event(intent, 500)))[0] == 200
    assert await balance(h) == 400
    assert await h.services.credits.verify() == []


async def test_a_reload_that_fails_later_is_told_by_its_webhook_and_nothing_is_granted(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await command(h, "autoreload below 450 buy 500 max 3")
    await buy(h)
    h.stripe.next_off_session_outcome = "processing"
    await ask(h, 1)
    await until(lambda: len(h.stripe.payment_intents) == 1)
    [intent] = h.stripe.payment_intents
    await ask(h, 1)  # still pending: no second reload
    await asyncio.sleep(0.2)
    assert len(h.stripe.payment_intents) == 1

    event = h.stripe.finish_processing(intent, succeeded=False)
    assert (await h.stripe_delivery(event))[0] == 200
    assert (await h.stripe_delivery(event))[0] == 200  # a repeated delivery
    await until(lambda: any("Auto-reload couldn't buy" in text for text in dms_to(h, ADMIN)))
    await asyncio.sleep(0.2)
    assert len([text for text in dms_to(h, ADMIN) if "Auto-reload couldn't buy" in text]) == 1
    assert "Auto-reload is off" in await command(h, "autoreload")
    assert await balance(h) == 300
    assert await h.services.credits.verify() == []
