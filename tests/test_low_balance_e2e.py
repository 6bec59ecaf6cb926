"""Low balance: the answer that takes the available credits below LOW_BALANCE_THRESHOLD says so under itself, and
each admin who bought credits or set limits gets one DM; only a top-up above the threshold re-arms it."""

from __future__ import annotations

import pytest

from tests.harness import TEAM
from tests.test_top_up_e2e import buttons

pytestmark = pytest.mark.billing

ADMIN, BUYER_ADMIN, BUYER_MEMBER, MEMBER = "UADMIN", "UBUYADM", "UBUYMEM", "U0001"


def low_balance_dms(h) -> list[tuple[str, str]]:
    return [
        (c.params["channel"], c.params["text"])
        for c in h.slack.calls_to("chat.postMessage")
        if c.params["channel"].startswith("D") and "running low" in c.params["text"]
    ]


async def buy(h, user: str) -> None:
    _, overview = await h.command("/credits", user=user)
    offer = buttons(overview)[0]
    sent = sum(len(posts) for posts in h.slack.responses.values())
    await h.click(offer["action_id"], offer["value"], user=user)
    await h.responses(sent + 1)  # the checkout link, once its session exists
    session = next(s for s in h.stripe.sessions.values() if s["metadata"]["user_id"] == user)
    assert (await h.stripe_delivery(h.stripe.complete(session["id"])))[0] == 200


async def test_admins_who_bought_or_set_limits_get_one_dm_per_crossing(start_bot_on_each_database):
    h = await start_bot_on_each_database(ai_credits_per_message=100, free_credits=0, low_balance_threshold=150)
    for user, admin in ((ADMIN, True), (BUYER_ADMIN, True), (BUYER_MEMBER, False), (MEMBER, False)):
        h.slack.add_user(TEAM, user, is_admin=admin)
    await buy(h, BUYER_ADMIN)  # 500 credits
    await buy(h, BUYER_MEMBER)  # 500 more: 1,000
    status, body = await h.command("/credits", "limit default 10000/month", user=ADMIN)
    assert status == 200 and "Done" in body["text"]
    await h.services.credits.grant(TEAM, -700, kind="adjustment", source="test", external_id="down")  # 300 left

    for i in range(2):  # 300 -> 200 (still above), 200 -> 100 (below: once)
        await h.mention(f"question {i}", user=MEMBER, channel=f"C50{i}")
        await h.idle()
    dms = low_balance_dms(h)
    assert sorted(channel for channel, _ in dms) == [f"D{ADMIN[1:]}", f"D{BUYER_ADMIN[1:]}"], dms
    assert all("100 left" in text and "`/credits`" in text for _, text in dms)

    await h.mention("one more, still low", user=MEMBER, channel="C510")
    await h.idle()
    assert len(low_balance_dms(h)) == 2, "told once until a top-up lifts it"

    await h.services.credits.grant(TEAM, 500, kind="grant", source="test", external_id="top-up")  # 500: re-armed
    for i in range(4):  # 500 -> 400 -> 300 -> 200 -> 100: below again
        await h.mention(f"again {i}", user=MEMBER, channel=f"C52{i}")
        await h.idle()
    assert len(low_balance_dms(h)) == 4
