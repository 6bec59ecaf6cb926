"""The Home tab end to end: what it shows a workspace with and without credits, buying from it, and its
refresh once Stripe's payment is granted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bot.history import ThreadKey, Turn
from bot.server import tidy
from bot.tables import conversation_turns
from tests.harness import OAUTH, TEAM, new_ts

pytestmark = pytest.mark.billing


def block(view: dict, block_id: str) -> dict | None:
    return next((b for b in view["blocks"] if b.get("block_id") == block_id), None)


def text_of(view: dict) -> str:
    parts = []
    for b in view["blocks"]:
        if isinstance(b.get("text"), dict):
            parts.append(b["text"]["text"])
        parts.extend(e.get("text", "") for e in b.get("elements", []) if b["type"] == "context")
    return "\n".join(parts)


def buy_buttons(view: dict) -> list[dict]:
    actions = block(view, "buy_credits")
    return actions["elements"] if actions else []


def checkout_url(view: dict) -> str | None:
    return next((b["accessory"]["url"] for b in view["blocks"] if (b.get("accessory") or {}).get("url")), None)


async def test_the_home_tab_of_a_workspace_with_credits(start_bot_on_each_database):
    h = await start_bot_on_each_database(free_credits=1000, low_balance_threshold=0)
    await asyncio.gather(
        h.mention("one", user="U0001"), h.mention("two", user="U0001"), h.mention("three", user="U0002")
    )
    await h.idle()

    await h.open_home(user="U0001")
    view = await h.home(user="U0001")
    text = text_of(view)
    assert view["blocks"][0]["type"] == "header"
    assert "*Available:* 997 credits" in text
    usage = block(view, "usage")["text"]["text"]
    assert "*3 credits* over 3 answers" in usage
    assert usage.index("<@U0001>: 2") < usage.index("<@U0002>: 1")
    assert [(b["action_id"], b["value"]) for b in buy_buttons(view)] == [
        ("buy_credits_500", "500"),
        ("buy_credits_2000", "2000"),
    ]
    assert block(view, "no_credits") is None
    assert "mention me" in block(view, "how_to")["text"]["text"] and "/credits" in text


async def test_the_home_tab_of_a_workspace_without_credits(start_bot_on_each_database):
    h = await start_bot_on_each_database(free_credits=0)
    await h.open_home(user="U0003")
    view = await h.home(user="U0003")
    assert "*Available:* 0 credits" in text_of(view)
    assert "No credits left" in block(view, "no_credits")["text"]["text"]
    assert "No answers yet this month." in block(view, "usage")["text"]["text"]
    assert len(buy_buttons(view)) == 2, "the way out is right there"


async def test_the_messages_tab_publishes_nothing_and_without_stripe_there_are_no_buttons(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(stripe_secret_key=None)
    await h.send_event(
        {"type": "app_home_opened", "user": "U0001", "channel": "D0001", "tab": "messages", "event_ts": "1"}
    )
    await asyncio.sleep(0.3)
    assert h.slack.home_views == {}
    await h.open_home()
    view = await h.home()
    assert buy_buttons(view) == [] and "not configured" in text_of(view)


async def test_buying_from_the_home_tab_shows_the_link_there_and_the_grant_refreshes_it(start_bot_on_each_database):
    h = await start_bot_on_each_database(**OAUTH, free_credits=0)
    await h.install(TEAM, user="U0001", bot_token="xoxb-home")
    await h.open_home(user="U0005")
    before = await h.home(user="U0005")

    clicks = await asyncio.gather(*[h.click_in_home("buy_credits_500", "500", user="U0005") for _ in range(2)])
    assert [status for status, _ in clicks] == [200, 200]
    with_link = await h.home(user="U0005", newer_than=before)
    await asyncio.sleep(0.3)
    (session,) = h.stripe.sessions.values()  # a double click in the tab is one purchase
    assert session["metadata"] == {"team_id": TEAM, "user_id": "U0005", "credits": "500"}
    assert checkout_url(h.slack.home_views[(TEAM, "U0005")]) == session["url"] == checkout_url(with_link)
    assert h.slack.responses == {}, "a Home tab has no response_url"

    shown = h.slack.home_views[(TEAM, "U0005")]
    assert (await h.stripe_delivery(h.stripe.complete(session["id"])))[0] == 200
    refreshed = await h.home(user="U0005", newer_than=shown)
    assert "*Available:* 500 credits" in text_of(refreshed) and checkout_url(refreshed) is None
    assert block(refreshed, "no_credits") is None
    (dm,) = [c for c in h.slack.calls_to("chat.postMessage") if c.params["channel"] == "D0005"]
    assert dm.team_id == TEAM and "500 credits were added" in dm.params["text"]


async def test_conversations_older_than_the_retention_are_purged(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(history_retention_days=30)
    old, recent = ThreadKey(TEAM, "C0001", "1.0"), ThreadKey(TEAM, "C0001", "2.0")
    long_ago = datetime.now(UTC) - timedelta(days=31)
    async with h.services.engine.begin() as connection:
        await connection.execute(
            sa.insert(conversation_turns),
            [
                {
                    "team_id": TEAM,
                    "channel_id": "C0001",
                    "thread_ts": "1.0",
                    "role": role,
                    "content": "long ago",
                    "created_at": long_ago,
                }
                for role in ("user", "assistant")
            ],
        )
    async with h.services.engine.begin() as connection:
        await h.services.history.append(connection, recent, [Turn("user", "today"), Turn("assistant", "yes")])
    await tidy(h.services)  # what the upkeep loop runs at start and every SWEEP_INTERVAL_SECONDS
    assert not await h.services.history.knows(old) and await h.services.history.knows(recent)


async def test_the_messages_tab_suggests_a_few_prompts(start_bot_on_sqlite):
    from bot.surfaces.app_home import SUGGESTED_PROMPTS

    h = await start_bot_on_sqlite()
    event = {"type": "app_home_opened", "user": "U0001", "channel": "D0001", "tab": "messages", "event_ts": new_ts()}
    assert (await h.send_event(event)).status == 200
    await h.idle()
    for _ in range(100):
        if "D0001" in h.slack.suggested_prompts:
            break
        await asyncio.sleep(0.02)
    assert h.slack.suggested_prompts["D0001"]["prompts"] == SUGGESTED_PROMPTS
    assert ("T0001", "U0001") not in h.slack.home_views, "the Home tab is not published for the Messages tab"
