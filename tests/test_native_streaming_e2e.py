"""Answers streamed natively (chat.startStream/appendStream/stopStream), and every way back to edits: the
same answer goes on by chat.update on the stream's own message (or on a new post when no stream was
started), with no word lost or duplicated and the final text exact."""

from __future__ import annotations

import asyncio

import pytest

from bot import user_messages as say
from bot.surfaces.answer_controls import FEEDBACK_ACTION
from tests.fakes.anthropic import Script
from tests.harness import TEAM

ANSWER = " ".join(f"word{i}" for i in range(120))


async def native(start_bot, **overrides):
    return await start_bot(slack_streaming="native", slack_update_interval=0.1, **overrides)


def only_reply(h, channel: str, thread_ts: str):
    (message,) = h.slack.thread(channel, thread_ts)
    return message


def feedback_of(message) -> list[dict]:
    return [e for b in message.blocks or [] if b["type"] == "context_actions" for e in b["elements"]]


async def test_a_native_answer_starts_with_the_first_words_grows_and_stops_with_feedback(start_bot_on_sqlite):
    h = await native(start_bot_on_sqlite)
    h.claude.enqueue(Script(text=ANSWER, delta_chars=10, delay=0.02, first_delay=0.3))
    sent = await h.mention("stream it")
    await asyncio.sleep(0.15)
    assert h.slack.thread_status("C0001", sent.ts) == say.LOADING_STATUS, "the loading state shows at once"
    assert h.slack.thread("C0001", sent.ts) == [], "nothing is posted before Claude's first words"
    await h.idle()
    message = only_reply(h, "C0001", sent.ts)
    assert h.slack.visible_markdown(message) == ANSWER and message.streaming is None
    (start,) = h.slack.calls_to("chat.startStream")
    assert start.params["recipient_user_id"] == "U0001" and start.params["recipient_team_id"] == TEAM
    assert start.params["thread_ts"] == sent.ts
    assert start.params["markdown_text"] and ANSWER.startswith(start.params["markdown_text"]), (
        "the first words, no wait"
    )
    appends = h.slack.calls_to("chat.appendStream")
    assert len(appends) >= 3, "it grows while Claude writes"
    (_stop,) = h.slack.calls_to("chat.stopStream")
    assert [e["action_id"] for e in feedback_of(message)] == [FEEDBACK_ACTION]
    assert h.slack.calls_to("chat.update") == [] and h.slack.calls_to("chat.postMessage") == []
    session = h.slack.sessions[("C0001", sent.ts)]
    assert [status for _, status in session["history"]] == ["processing", "active"]


@pytest.mark.parametrize(
    "refusal",
    [
        "channel_type_not_supported",
        "messages_tab_disabled",
        "missing_recipient_user_id",
        "unknown_method",
        "invalid_chunks",
        "not_in_channel_but_posting_works",
    ],
)
async def test_a_stream_slack_will_not_start_is_posted_and_edited_instead(start_bot_on_sqlite, refusal):
    h = await native(start_bot_on_sqlite)
    if refusal == "channel_type_not_supported":
        h.slack.stream_unsupported_channels.add("C0001")
    elif refusal == "messages_tab_disabled":
        h.slack.messages_tab_disabled = True
    else:
        h.slack.inject("chat.startStream", refusal)
    channel = "D0001" if refusal == "messages_tab_disabled" else "C0001"
    h.claude.enqueue(Script(text=ANSWER, delta_chars=10, delay=0.01))
    sent = await (h.dm("stream it") if channel.startswith("D") else h.mention("stream it"))
    await h.idle()
    message = only_reply(h, channel, sent.ts)
    assert h.slack.visible_markdown(message) == ANSWER, "no word lost, none twice"
    assert h.slack.calls_to("chat.postMessage"), "posted instead"
    assert [e["action_id"] for e in feedback_of(message)] == [FEEDBACK_ACTION]


@pytest.mark.parametrize("failure", ["expired", "streaming_state_conflict", "internal_error", "edge_outage"])
async def test_a_stream_slack_ends_early_goes_on_by_edits_of_its_own_message(start_bot_on_sqlite, failure):
    h = await native(start_bot_on_sqlite)
    h.claude.enqueue(Script(text=ANSWER, delta_chars=10, delay=0.08))  # long enough for five failed appends
    sent = await h.mention("stream it")
    while len(h.slack.calls_to("chat.appendStream")) < 2:
        await asyncio.sleep(0.01)
    if failure == "expired":
        h.slack.stream_timeout = 0.0  # the stream times out: appends and stops fail from now on
    elif failure == "edge_outage":  # five plain-text 503s: the appends are sent again, then given up
        h.slack.inject_outage("chat.appendStream", status=503, count=5)
    else:
        h.slack.inject("chat.appendStream", failure, status=500 if failure == "internal_error" else 200)
    await h.idle(timeout=30)
    message = only_reply(h, "C0001", sent.ts)
    assert h.slack.visible_markdown(message) == ANSWER, "the same message, the whole text, exactly"
    assert message.streaming is None
    assert h.slack.calls_to("chat.update"), "finished by edits"
    assert h.slack.calls_to("chat.postMessage") == []
    assert [e["action_id"] for e in feedback_of(message)] == [FEEDBACK_ACTION]


async def test_a_30000_character_answer_streams_in_several_messages_with_code_blocks_intact(start_bot_on_sqlite):
    h = await native(start_bot_on_sqlite, claude_max_tokens=16_000)
    code = "\n".join(f"    step_{i}()  # do the thing number {i}" for i in range(760))
    answer = "Intro.\n\n```python\n" + code + "\n```\n\nThat's all."
    assert len(answer) > 30_000
    h.claude.enqueue(Script(text=answer, delta_chars=300, delay=0.01))
    sent = await h.mention("write a very long program")
    await h.idle(timeout=60)
    messages = h.slack.thread("C0001", sent.ts)
    assert len(messages) >= 3
    shown = [h.slack.visible_markdown(m) for m in messages]
    assert all(len(text) <= 12_000 for text in shown)
    assert all(text.count("```") % 2 == 0 for text in shown), "each message has its code fences balanced"
    assert all(m.streaming is None for m in messages)
    lines = [line for text in shown for line in text.split("\n") if line.startswith("    step_")]
    assert lines == code.split("\n"), "every line once, in order"
    assert [e["action_id"] for e in feedback_of(messages[-1])] == [FEEDBACK_ACTION]
    assert all(not feedback_of(m) for m in messages[:-1])


async def test_six_answers_at_once_stream_without_a_single_429(start_bot_on_sqlite):
    h = await native(start_bot_on_sqlite)
    texts = [f"answer {n}: " + " ".join(f"w{n}_{i}" for i in range(60)) for n in range(6)]
    h.claude.enqueue(*[Script(text=text, delta_chars=8, delay=0.03) for text in texts])
    sent = [await h.mention(f"question {n}", channel=f"C00{n}") for n in range(6)]
    await h.idle(timeout=60)
    assert [c for c in h.slack.calls if c.status == 429] == []
    shown = sorted(h.slack.visible_markdown(only_reply(h, f"C00{n}", s.ts)) for n, s in enumerate(sent))
    assert shown == sorted(texts)


async def test_auto_streams_while_the_budgets_allow_and_edits_beyond(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(
        slack_streaming="auto",
        slack_stream_starts_per_minute=3,
        slack_stream_stops_per_minute=3,
        slack_update_interval=0.1,
    )
    h.slack.stream_starts_per_minute = h.slack.stream_stops_per_minute = 3
    texts = [f"answer {n}: " + " ".join(f"w{n}_{i}" for i in range(30)) for n in range(6)]
    h.claude.enqueue(*[Script(text=text, delta_chars=8, delay=0.02) for text in texts])
    sent = [await h.mention(f"question {n}", channel=f"C00{n}") for n in range(6)]
    await h.idle(timeout=60)
    assert [c for c in h.slack.calls if c.status == 429] == []
    messages = [only_reply(h, f"C00{n}", s.ts) for n, s in enumerate(sent)]
    assert sorted(h.slack.visible_markdown(m) for m in messages) == sorted(texts)
    assert len(h.slack.calls_to("chat.startStream")) <= 3, "no more streams than can be stopped in the minute"
    assert h.slack.calls_to("chat.postMessage"), "the rest went by the edit path"
    # The edit path posts the first words themselves: no placeholder, no "first text" edit.
    for post in h.slack.calls_to("chat.postMessage"):
        assert post.params["blocks"][0]["text"] != say.THINKING


async def test_when_slacks_real_limits_are_tighter_than_configured_nothing_is_lost_and_retries_stay_few(
    start_bot_on_sqlite,
):
    """Slack's stream tiers are not published: here Slack allows far less than the settings say. The 429s
    pause the method for their Retry-After (no runaway retries) and every answer still ends exact."""
    h = await native(start_bot_on_sqlite)
    h.slack.stream_appends_per_minute, h.slack.stream_starts_per_minute, h.slack.stream_stops_per_minute = 6, 3, 3
    texts = [f"answer {n}: " + " ".join(f"w{n}_{i}" for i in range(40)) for n in range(4)]
    h.claude.enqueue(*[Script(text=text, delta_chars=8, delay=0.02) for text in texts])
    sent = [await h.mention(f"question {n}", channel=f"C00{n}") for n in range(4)]
    await h.idle(timeout=120)
    shown = sorted(h.slack.visible_markdown(only_reply(h, f"C00{n}", s.ts)) for n, s in enumerate(sent))
    assert shown == sorted(texts)
    limited = [c for c in h.slack.calls if c.status == 429]
    assert 0 < len(limited) <= 12, f"each 429 paused its method: {len(limited)} refusals"
