"""Edits are paced: per message, per workspace, and around Slack's 429s, without losing any text."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from itertools import pairwise

from bot.delivery.markdown import CURSOR
from tests.fakes.anthropic import Script

WORDS = " ".join(f"word{i}" for i in range(60))


def edits_by_message(slack) -> dict[str, list[float]]:
    times = defaultdict(list)
    for call in slack.calls_to("chat.update"):
        if call.status == 200 and call.response.get("ok"):
            times[call.params["ts"]].append(call.at)
    return times


async def test_each_message_is_edited_at_most_once_per_interval_and_ends_exact(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_update_interval=0.3)
    h.claude.enqueue(Script(text=WORDS, delta_chars=10, delay=0.03))
    sent = await h.mention("stream please")
    await h.idle()
    assert h.reply_text("C0001", sent.ts) == WORDS
    (times,) = edits_by_message(h.slack).values()
    assert len(times) >= 3
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert min(gaps) >= 0.3 - 0.005, gaps
    assert len(times) < len(WORDS) // 10, "intermediate states are skipped, not queued"


async def test_first_text_is_shown_without_waiting_for_the_interval(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_update_interval=5.0)
    h.claude.enqueue(Script(text="first words and then a lot more", delta_chars=11, first_delay=0.0, delay=0.4))
    sent = await h.mention("go")
    await asyncio.sleep(0.3)
    first = h.slack.calls_to("chat.update")
    assert len(first) == 1, "the first delta is shown at once"
    assert first[0].params["blocks"][0]["text"].startswith("first")
    await h.idle()
    assert h.reply_text("C0001", sent.ts) == "first words and then a lot more"


async def test_concurrent_answers_share_the_workspace_budget_without_a_429(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_edits_per_minute=12, slack_update_interval=0.2)
    h.slack.update_limit_per_minute = 12
    texts = [f"answer {n}: " + " ".join(f"w{n}_{i}" for i in range(12)) for n in range(3)]
    h.claude.enqueue(*[Script(text=text, delta_chars=20, delay=0.1) for text in texts])
    sent = [await h.mention(f"question {n}", channel=f"C000{n}") for n in range(3)]
    await h.idle(timeout=30)
    updates = h.slack.calls_to("chat.update")
    assert [c for c in updates if c.status == 429] == []
    assert len(updates) <= 12
    shown = sorted(h.reply_text(f"C000{n}", s.ts) for n, s in enumerate(sent))
    assert shown == sorted(texts)


async def test_a_429_is_obeyed_and_the_latest_text_is_sent_after_it(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_update_interval=0.1)
    h.claude.enqueue(Script(text=WORDS, delta_chars=15, delay=0.05))
    h.slack.inject("chat.update", "ratelimited", retry_after=1)
    sent = await h.mention("go")
    await h.idle()
    updates = h.slack.calls_to("chat.update")
    limited = [c for c in updates if c.status == 429]
    assert len(limited) == 1
    after = [c for c in updates if c.at > limited[0].at]
    assert after and after[0].at - limited[0].at >= 1.0 - 0.005, "Retry-After was obeyed"
    assert h.reply_text("C0001", sent.ts) == WORDS


async def test_a_deleted_reply_stops_claude_at_once(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_update_interval=0.1)
    h.claude.enqueue(Script(text=" ".join(["more"] * 400), delta_chars=5, delay=0.02))
    sent = await h.mention("go on and on")
    await h.claude.wait_for_requests(1)
    while not h.slack.calls_to("chat.update"):
        await asyncio.sleep(0.02)
    (reply,) = h.slack.thread("C0001", sent.ts)
    h.slack.delete_message("C0001", reply.ts)
    await h.idle()
    received = h.claude.requests[0]
    assert received.cancelled, "the Claude stream was closed"
    assert received.deltas_sent < 400 * 5 // 5
    not_found = [c for c in h.slack.calls_to("chat.update") if c.response.get("error") == "message_not_found"]
    assert len(not_found) == 1, "no edits after Slack said the message is gone"


async def test_a_long_answer_continues_in_new_messages_with_code_blocks_intact(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_update_interval=0.05, claude_max_tokens=16_000)
    code = "\n".join(f"    step_{i}()  # do the thing number {i}" for i in range(500))
    answer = "Intro paragraph.\n\n```python\n" + code + "\n```\n\nThat's all."
    h.claude.enqueue(Script(text=answer, delta_chars=400))
    sent = await h.mention("write a long program")
    await h.idle(timeout=30)
    messages = h.slack.thread("C0001", sent.ts)
    assert len(messages) >= 2
    shown = [h.slack.visible_markdown(m) for m in messages]
    for text in shown:
        assert len(text) <= 12_000
        assert text.count("```") % 2 == 0, "each message has its code fences balanced"
    assert all(text.startswith("```python") for text in shown[1:])
    combined = "\n".join(shown)
    assert all(CURSOR not in text for text in shown)
    positions = [combined.index(f"step_{i}()") for i in range(500)]
    assert positions == sorted(positions), "every line of the program is there, in order"
    assert combined.endswith("That's all.")
