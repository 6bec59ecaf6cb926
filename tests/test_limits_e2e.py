"""Spending limits through Slack: admins set them with /credits, everyone else is refused, and an answer
that would go over a limit is told so (naming the limit, what was used, when it resets) without Claude."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.fakes.anthropic import Script
from tests.harness import TEAM

pytestmark = pytest.mark.billing

ADMIN, MEMBER, OTHER = "UADMIN", "U0001", "U0002"


async def start(start_bot, *, price: int = 10, granted: int = 10_000, **overrides):
    h = await start_bot(ai_credits_per_message=price, free_credits=0, low_balance_threshold=0, **overrides)
    await h.services.credits.grant(TEAM, granted, kind="grant", source="test", external_id="initial")
    h.slack.add_user(TEAM, ADMIN, is_admin=True, name="admin")
    h.slack.add_user(TEAM, MEMBER, name="member")
    h.slack.add_user(TEAM, OTHER, name="other")
    return h


async def credits_command(h, text: str, user: str = ADMIN) -> str:
    status, body = await h.command("/credits", text, user=user)
    assert status == 200, body
    assert body["response_type"] == "ephemeral"
    return body["text"]


async def test_only_admins_set_and_list_limits(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    refused = await credits_command(h, f"limit <@{OTHER}|other> 5/day", user=MEMBER)
    assert "Only workspace admins and owners" in refused
    assert "Only workspace admins and owners" in await credits_command(h, "limits", user=MEMBER)
    assert await h.services.credits.limits(TEAM) == []

    assert "No spending limits" in await credits_command(h, "limits")
    done = await credits_command(h, f"limit <@{MEMBER}|member> 200/day")
    assert f"<@{MEMBER}> may spend at most *200* credits a day (UTC)" in done
    await credits_command(h, "limit <#C0042|general> 1,000/month")
    await credits_command(h, "limit default 300/month")
    listed = await credits_command(h, "limits")
    assert f"<@{MEMBER}>: 200 credits a day (0 used today)" in listed
    assert "<#C0042>: 1,000 credits a month (0 used this month)" in listed
    assert "everyone without a limit of their own: 300 credits a month" in listed
    assert "UTC" in listed

    assert "Removed the limit" in await credits_command(h, f"limit <@{MEMBER}> off")
    assert "had no limit" in await credits_command(h, f"limit <@{MEMBER}> off")
    assert "didn't understand" in await credits_command(h, "limit somebody 5/day")
    assert "200/day" in await credits_command(h, f"limit <@{MEMBER}> 5/week")
    assert {(limit.scope, limit.subject) for limit, _ in await h.services.credits.limits(TEAM)} == {
        ("channel", "C0042"),
        ("default", ""),
    }


async def test_a_question_over_a_limit_is_told_why_and_when_it_resets_without_claude(start_bot_on_each_database):
    h = await start(start_bot_on_each_database, price=10)
    await credits_command(h, f"limit <@{MEMBER}|member> 25/day")
    answered = [await h.mention(f"question {i}", user=MEMBER, channel=f"C30{i}") for i in range(2)]
    await h.idle()
    over = await h.mention("one too many", user=MEMBER, channel="C309")
    await h.idle()

    assert len(h.claude.requests) == 2, "the question over the limit never reaches Claude"
    for i, sent in enumerate(answered):
        assert h.reply_text(f"C30{i}", sent.ts) == f"You said: question {i}"
    told = h.reply_text("C309", over.ts)
    assert "your limit of *25* credits a day" in told
    assert "20 used today" in told and "up to 10" in told
    assert "00:00 UTC" in told and "calendar days and months in UTC" in told
    balance = await h.services.credits.balance(TEAM)
    assert (balance.balance, balance.reserved) == (10_000 - 20, 0)

    other = await h.mention("not limited", user=OTHER, channel="C310")
    await h.idle()
    assert h.reply_text("C310", other.ts) == "You said: not limited"


async def test_twenty_concurrent_answers_against_a_limit_of_five_answers_never_exceed_it(start_bot_on_each_database):
    h = await start(start_bot_on_each_database, price=10)
    h.claude.default = Script(delay=0.05, delta_chars=6)  # the answers overlap
    await credits_command(h, f"limit <@{MEMBER}|member> 50/day")
    sent = await asyncio.gather(*(h.mention(f"question {i}", user=MEMBER, channel=f"C4{i:02d}") for i in range(20)))
    await h.idle(timeout=60)

    replies = [h.reply_text(f"C4{i:02d}", s.ts) for i, s in enumerate(sent)]
    answered = [text for text in replies if text.startswith("You said:")]
    refused = [text for text in replies if "your limit of *50* credits a day" in text]
    assert (len(answered), len(refused)) == (5, 15), replies
    assert len(h.claude.requests) == 5
    usage = [row for row in await h.services.credits.history(TEAM, limit=100) if row.kind == "usage"]
    assert sum(-row.amount for row in usage) == 50
    assert await h.services.credits.verify() == []


async def test_a_channel_limit_and_the_default_apply_to_everyone_in_them(start_bot_on_each_database):
    h = await start(start_bot_on_each_database, price=10)
    await credits_command(h, "limit <#C0050|busy> 10/month")
    await credits_command(h, "limit default 10/day")
    await credits_command(h, f"limit <@{OTHER}|other> 100/day")  # their own replaces the default

    first = await h.mention("first in busy", user=OTHER, channel="C0050")
    await h.idle()
    second = await h.mention("second in busy", user=OTHER, channel="C0050")
    elsewhere = await h.mention("elsewhere", user=OTHER, channel="C0051")
    member_once = await h.mention("member once", user=MEMBER, channel="C0052")
    await h.idle()
    member_twice = await h.mention("member twice", user=MEMBER, channel="C0053")
    await h.idle()

    assert h.reply_text("C0050", first.ts) == "You said: first in busy"
    assert "this channel's limit of *10* credits a month" in h.reply_text("C0050", second.ts)
    assert h.reply_text("C0051", elsewhere.ts) == "You said: elsewhere"
    assert h.reply_text("C0052", member_once.ts) == "You said: member once"
    assert "this workspace's limit per person of *10* credits a day" in h.reply_text("C0053", member_twice.ts)


def limits_section(view: dict) -> dict | None:
    return next((b for b in view["blocks"] if b.get("block_id") == "spending_limits"), None)


async def test_admins_see_and_set_limits_in_the_home_tab_with_a_modal(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await credits_command(h, "limit default 300/month")
    await h.open_home(user=MEMBER)
    assert limits_section(await h.home(user=MEMBER)) is None, "members do not see the limits"
    await h.open_home(user=ADMIN)
    home = await h.home(user=ADMIN)
    section = limits_section(home)
    assert "everyone without a limit of their own: 300 credits a month" in section["text"]["text"]

    status, _ = await h.click_in_home("edit_limits", "edit", user=MEMBER, block_id="spending_limits")
    assert status == 200
    status, _ = await h.click_in_home("edit_limits", "edit", user=ADMIN, block_id="spending_limits")
    assert status == 200
    for _ in range(100):
        if h.slack.modals:
            break
        await asyncio.sleep(0.02)
    [modal] = h.slack.modals  # only the admin's press opened one
    assert modal["callback_id"] == "spending_limits"

    def values(scope: str, amount: str, user: str | None = None) -> dict:
        return {
            "scope": {"scope": {"type": "static_select", "selected_option": {"value": scope}}},
            "user": {"user": {"type": "users_select", "selected_user": user}},
            "channel": {"channel": {"type": "conversations_select", "selected_conversation": None}},
            "amount": {"amount": {"type": "plain_text_input", "value": amount}},
        }

    status, body = await h.submit_view(modal, values("user", "200/day"), user=ADMIN)
    assert status == 200 and json.loads(body) == {"response_action": "errors", "errors": {"user": "Choose the person."}}
    status, body = await h.submit_view(modal, values("user", "lots", user=MEMBER), user=ADMIN)
    assert json.loads(body)["errors"] == {"amount": "Write it like 200/day or 1000/month, or off."}
    status, body = await h.submit_view(modal, values("user", "150/day", user=MEMBER), user=OTHER)
    assert json.loads(body)["errors"] == {
        "amount": "Only workspace admins and owners can see or change spending limits."
    }
    assert {(limit.scope, limit.subject) for limit, _ in await h.services.credits.limits(TEAM)} == {("default", "")}

    status, body = await h.submit_view(modal, values("user", "150/day", user=MEMBER), user=ADMIN)
    assert status == 200 and body in ("", "{}")
    updated = await h.home(user=ADMIN, newer_than=home)
    assert f"<@{MEMBER}>: 150 credits a day (0 used today)" in limits_section(updated)["text"]["text"]
    [(limit, _)] = [(limit, used) for limit, used in await h.services.credits.limits(TEAM) if limit.scope == "user"]
    assert (limit.subject, limit.credits, limit.period, limit.set_by) == (MEMBER, 150, "day", ADMIN)

    await h.submit_view(modal, values("default", "off"), user=ADMIN)
    assert [limit.scope for limit, _ in await h.services.credits.limits(TEAM)] == ["user"]
