"""What answers use, chosen by workspace admins with `/claude` and the Home tab: the model (only priced ones),
the system prompt and web search, for the workspace and per channel; audited, effective at the next question."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta

from billing import TokenUsage, build_pricing
from tests.fakes.anthropic import Script
from tests.harness import TEAM

ADMIN, MEMBER = "UADMIN", "U0001"


def admins(h) -> None:
    h.slack.add_user(TEAM, ADMIN, is_admin=True, name="ada")
    h.slack.add_user(TEAM, MEMBER, name="bob")


async def say(h, text: str, user: str = ADMIN) -> str:
    status, body = await h.command("/claude", text, user=user)
    assert status == 200
    return body["text"]


async def test_an_admin_chooses_the_model_and_prompt_for_the_workspace_and_a_channel(start_bot_on_each_database):
    h = await start_bot_on_each_database(ai_credits_per_message=None)
    admins(h)
    assert "Only workspace admins" in await say(h, "model claude-haiku-4-5", user=MEMBER)
    assert "has no price" in await say(h, "model claude-imaginary-9")
    assert "Done: model for the workspace set to claude-haiku-4-5" in await say(h, "model claude-haiku-4-5")
    assert "Done: model in <#C0002> set to claude-opus-4-6" in await say(h, "model claude-opus-4-6 <#C0002|random>")
    assert "Done: system prompt for the workspace" in await say(h, "prompt Answer like a pirate.")

    for channel in ("C0001", "C0002"):
        h.claude.enqueue(Script(text="Arr."))
        await h.mention("hello", channel=channel)
        await h.idle()
    here, there = h.claude.requests
    assert here.body["model"] == "claude-haiku-4-5" and there.body["model"] == "claude-opus-4-6"
    assert here.body["system"][0]["text"] == "Answer like a pirate." == there.body["system"][0]["text"]
    assert "tools" not in here.body

    # Charged at each model's prices, and reported under its model.
    csv_text = await h.services.credits.answers_csv(TEAM, since=h.services.clock() - timedelta(days=1))
    rows = {row["channel"]: row for row in csv.DictReader(io.StringIO(csv_text))}
    for channel, request in (("C0001", here), ("C0002", there)):
        usage = TokenUsage(
            **{
                k: request.usage.get(k, 0)
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
            }
        )
        expected = build_pricing(h.services.settings, request.body["model"]).charge(usage, produced_output=True)
        assert rows[channel]["model"] == request.body["model"] and int(rows[channel]["credits"]) == expected

    overview = await say(h, "settings", user=MEMBER)  # anyone may look
    assert "Model: `claude-haiku-4-5`" in overview and "In <#C0002>: model `claude-opus-4-6`" in overview
    assert "by <@UADMIN>" in overview and "Latest changes" in overview

    assert "Done: system prompt for the workspace set to the default" in await say(h, "prompt reset")
    h.claude.enqueue(Script(text="Hi."))
    await h.mention("hello again")
    await h.idle()
    assert h.claude.requests[-1].body["system"][0]["text"] == h.services.settings.system_prompt
    changes = await h.services.answer_settings.history(TEAM)
    assert [(c.setting, c.channel_id, c.new_value) for c in changes][:2] == [
        ("system_prompt", "", None),
        ("system_prompt", "", "Answer like a pirate."),
    ]
    assert all(change.changed_by == ADMIN for change in changes)


async def test_model_listing_shows_each_priced_model_with_its_cost(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(ai_credits_per_message=None)
    admins(h)
    listing = await say(h, "model")
    for model in ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"):
        assert f"`{model}`: about" in listing


async def test_web_search_when_an_admin_turns_it_on_is_capped_charged_and_cited(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(ai_credits_per_message=None, web_search_max_uses=2)
    admins(h)
    assert "Done: web search for the workspace set to on" in await say(h, "websearch on")
    results = [{"url": "https://example.org/rates", "title": "Rates 2026"}]
    h.claude.enqueue(
        Script(
            text=[
                "According to the bank, ",
                {"text": "rates are 2%.", "citations": [{"url": "https://example.org/rates"}]},
            ],
            searches=[{"query": "interest rates 2026", "results": results}],
        )
    )
    sent = await h.mention("what are rates now?")
    await h.idle()
    (request,) = h.claude.requests
    assert request.body["tools"] == [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    reply = h.reply_text("C0001", sent.ts)
    assert reply.startswith("According to the bank, rates are 2%.")
    assert "[Rates 2026](https://example.org/rates)" in reply
    assert request.usage["server_tool_use"]["web_search_requests"] == 1
    usage = TokenUsage(
        input_tokens=request.usage["input_tokens"],
        output_tokens=request.usage["output_tokens"],
        cache_creation_input_tokens=request.usage.get("cache_creation_input_tokens", 0),
        cache_read_input_tokens=request.usage.get("cache_read_input_tokens", 0),
        web_search_requests=1,
    )
    csv_text = await h.services.credits.answers_csv(TEAM, since=h.services.clock() - timedelta(days=1))
    (row,) = csv.DictReader(io.StringIO(csv_text))
    assert int(row["credits"]) == h.services.pricing.charge(usage, produced_output=True)
    without_search = TokenUsage(**{**usage.__dict__, "web_search_requests": 0})
    assert h.services.pricing.charge(usage, produced_output=True) > h.services.pricing.charge(
        without_search, produced_output=True
    )


async def test_the_home_tab_modal_changes_a_channels_settings_for_admins_only(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(ai_credits_per_message=None)
    admins(h)
    await h.open_home(user=ADMIN)
    await h.home(user=ADMIN)
    status, _ = await h.click_in_home("edit_answer_settings", "edit", user=ADMIN, block_id="answer_settings")
    assert status == 200
    for _ in range(100):
        if h.slack.modals:
            break
        await asyncio.sleep(0.02)
    [modal] = h.slack.modals
    assert modal["callback_id"] == "answer_settings"
    values = {
        "channel": {"channel": {"type": "conversations_select", "selected_conversation": "C0003"}},
        "model": {"model": {"type": "static_select", "selected_option": {"value": "claude-haiku-4-5"}}},
        "prompt": {"prompt": {"type": "plain_text_input", "value": "Be brief."}},
        "web_search": {"web_search": {"type": "static_select", "selected_option": {"value": "keep"}}},
    }
    status, _ = await h.submit_view(modal, values, user=MEMBER)
    assert status == 200 and await h.services.answer_settings.overview(TEAM) == {}
    status, _ = await h.submit_view(modal, values, user=ADMIN)
    assert status == 200
    assert await h.services.answer_settings.overview(TEAM) == {
        "C0003": {"model": "claude-haiku-4-5", "system_prompt": "Be brief."}
    }
    h.claude.enqueue(Script(text="Ok."))
    await h.mention("hi", channel="C0003")
    await h.idle()
    assert h.claude.requests[0].body["model"] == "claude-haiku-4-5"
    assert h.claude.requests[0].body["system"][0]["text"] == "Be brief."
