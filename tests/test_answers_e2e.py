"""A question reaches the real bot over signed HTTP; its answer streams into the fake Slack."""

from __future__ import annotations

import asyncio

import pytest

from bot.delivery.markdown import CURSOR, open_fence
from tests.fakes.anthropic import Script
from tests.harness import BOT_USER, new_ts


def markdown_blocks(call) -> list[str]:
    return [b["text"] for b in call.params.get("blocks") or [] if b.get("type") == "markdown"]


async def test_a_mention_is_answered_in_its_thread_with_streamed_markdown(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    answer = "**Rotate** the key in settings, then:\n\n```sh\nrotate --now\n```\nDone."
    h.claude.enqueue(Script(text=answer, delta_chars=8, delay=0.05))
    sent = await h.mention("how do I rotate a key?")
    assert sent.status == 200
    await h.idle()

    replies = h.slack.thread("C0001", sent.ts)
    assert len(replies) == 1
    assert h.slack.visible_markdown(replies[0]) == answer
    posts = h.slack.calls_to("chat.postMessage")
    assert posts[0].params["thread_ts"] == sent.ts
    assert "Thinking" in markdown_blocks(posts[0])[0]
    updates = h.slack.calls_to("chat.update")
    assert len(updates) >= 2, "the answer should grow in several edits"
    for update in updates[:-1]:
        shown = markdown_blocks(update)[0]
        assert shown.rstrip("`\n").endswith(CURSOR), shown
        assert open_fence(shown) is None, "a half-written code block must be shown closed"
        assert update.params["text"], "a plain-text fallback for notifications"
    assert CURSOR not in markdown_blocks(updates[-1])[0]
    assert h.claude.requests[0].body["messages"][-1]["content"][0]["text"] == "how do I rotate a key?"


async def test_the_placeholder_shows_before_claude_answers_and_the_ack_does_not_wait(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.claude.enqueue(Script(text="slow answer", first_delay=1.0))
    sent = await h.mention("hello?")
    assert sent.status == 200
    assert h.slack.calls_to("chat.update") == [], "Slack got its 200 before any answer text existed"
    await h.claude.wait_for_requests(1)
    await asyncio.sleep(0.3)
    assert len(h.slack.thread("C0001", sent.ts)) == 1
    assert "Thinking" in h.reply_text("C0001", sent.ts)
    await h.idle()
    assert h.reply_text("C0001", sent.ts) == "slow answer"


async def test_a_mention_inside_a_thread_is_answered_in_that_thread(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    parent = new_ts()
    h.slack.add_history("C0001", parent, [{"type": "message", "user": "U0002", "text": "the parent", "ts": parent}])
    sent = await h.mention("summarize this thread", thread_ts=parent)
    await h.idle()
    assert len(h.slack.thread("C0001", parent)) == 1
    assert h.slack.thread("C0001", sent.ts) == []
    sent_messages = h.claude.requests[0].body["messages"]
    assert "the parent" in str(sent_messages[0]["content"]), "the thread was read once for context"
    assert len(h.slack.calls_to("conversations.replies")) == 1

    await h.mention("and more?", thread_ts=parent)
    await h.idle()
    assert len(h.slack.calls_to("conversations.replies")) == 1, "later turns come from the bot's own history"
    assert "the parent" in str(h.claude.requests[1].body["messages"])


async def test_a_thread_that_slack_will_not_let_us_read_is_answered_without_it_and_says_so(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    parent = new_ts()
    h.slack.inject("conversations.replies", "ratelimited", retry_after=60)
    h.claude.enqueue(Script(text="Best effort."))
    await h.mention("summarize this thread", thread_ts=parent)
    await h.idle()
    text = h.reply_text("C0001", parent)
    assert text.startswith("Best effort.")
    assert "couldn't read the earlier messages" in text
    assert len(h.claude.requests[0].body["messages"]) == 1


async def test_direct_messages_continue_the_dm_and_dm_threads(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.claude.enqueue(Script(text="First answer."), Script(text="Second answer."), Script(text="In thread."))
    await h.dm("first question")
    await h.idle()
    top_level = h.replies("D0001", None)
    assert [h.slack.visible_markdown(m) for m in top_level] == ["First answer."]

    await h.dm("second question")
    await h.idle()
    follow_up = h.claude.requests[1].body["messages"]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user"]
    assert "first question" in str(follow_up[0]["content"]) and "First answer." in str(follow_up[1]["content"])

    parent = h.sent[0].ts
    await h.dm("a question in a thread", thread_ts=parent)
    await h.idle()
    assert h.reply_text("D0001", parent) == "In thread."


async def test_follow_ups_carry_cache_breakpoints_and_read_the_earlier_turns_from_the_cache(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(system_prompt="You are helpful. " * 40)
    h.claude.min_cache_tokens = 50
    sent = await h.mention("first question " + "context " * 50)
    await h.idle()
    await h.mention("follow-up", thread_ts=sent.ts)
    await h.idle()
    first, second = h.claude.requests
    assert first.body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert second.body["messages"][-2]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert second.body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert second.usage["cache_read_input_tokens"] > first.usage["cache_read_input_tokens"]


async def test_an_empty_mention_gets_help_and_no_claude_call(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    sent = await h.mention("")
    await h.idle()
    assert "Ask me anything" in h.reply_text("C0001", sent.ts)
    assert h.claude.requests == []


async def test_slack_retries_and_restarts_never_produce_a_second_answer(start_bot_on_sqlite, sqlite_url):
    h = await start_bot_on_sqlite()
    sent = await h.mention("once please")
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    event = {
        "type": "app_mention",
        "user": "U0001",
        "text": f"<@{BOT_USER}> once please",
        "ts": sent.ts,
        "channel": "C0001",
    }
    again = await h.send_event(event, event_id=sent.event_id, headers=retry)
    assert again.status == 200
    await h.idle()
    assert len(h.claude.requests) == 1

    restarted = await start_bot_on_sqlite()  # a new process on the same database
    await restarted.send_event(event, event_id=sent.event_id, headers=retry)
    await restarted.idle()
    assert restarted.claude.requests == []


@pytest.mark.parametrize(
    "event",
    [
        {"type": "message", "channel_type": "im", "bot_id": "B999", "user": "U0009", "text": "I am a bot"},
        {"type": "message", "channel_type": "im", "subtype": "message_changed", "text": "edited"},
        {"type": "message", "channel_type": "im", "subtype": "channel_join", "user": "U0001", "text": "joined"},
        {"type": "message", "channel_type": "im", "user": BOT_USER, "bot_id": "BBOT", "text": "my own reply"},
        {"type": "app_mention", "bot_id": "B999", "user": "U0009", "text": f"<@{BOT_USER}> from a bot"},
    ],
)
async def test_bots_and_message_subtypes_are_ignored(start_bot_on_sqlite, event):
    h = await start_bot_on_sqlite()
    event = {**event, "ts": new_ts(), "channel": "D0001" if event["type"] == "message" else "C0001"}
    sent = await h.send_event(event)
    assert sent.status == 200
    await asyncio.sleep(0.2)
    await h.idle()
    assert h.claude.requests == []
    assert h.slack.calls_to("chat.postMessage") == []


async def test_forged_and_stale_requests_are_refused_without_effect(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    forged = await h.mention("forged", secret="not-the-secret")
    stale = await h.mention("stale", timestamp=1_600_000_000)
    status, _ = await h.post_signed("{}", "application/json", headers={"X-Slack-Signature": "v0=deadbeef"})
    assert (forged.status, stale.status, status) == (401, 401, 401)
    await asyncio.sleep(0.2)
    assert h.claude.requests == [] and h.slack.calls_to("chat.postMessage") == []


async def test_health_check_answers_once_the_database_does(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    async with h.http.get(f"{h.url}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["ok"] is True


async def test_a_slack_outage_during_an_answer_leaves_no_cursor_behind(start_bot_on_sqlite):
    """Slack's edge answers 500 five times in a row (the edit path used to give up there, cursor and all):
    the edits wait it out, and the answer ends exact."""
    h = await start_bot_on_sqlite(slack_update_interval=0.1)
    words = " ".join(f"w{i}" for i in range(80))
    h.claude.enqueue(Script(text=words, delta_chars=6, delay=0.02))
    sent = await h.mention("long enough")
    while not h.slack.calls_to("chat.update"):
        await asyncio.sleep(0.01)
    h.slack.inject_outage("chat.update", status=500, count=5)
    await h.idle(timeout=60)
    assert h.reply_text("C0001", sent.ts) == words
    assert [c.status for c in h.slack.calls_to("chat.update")].count(500) == 5
