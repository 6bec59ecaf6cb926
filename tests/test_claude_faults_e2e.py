"""Each way Claude can fail leaves the reply in a clear final state: never "Thinking…", never a traceback."""

from __future__ import annotations

import time

import pytest

from bot.delivery.markdown import CURSOR
from tests.fakes.anthropic import Script

LEAKS = ("Traceback", "Error(", "Exception", "test-anthropic-key", "xoxb-", "httpx", "anthropic.")


def assert_final_and_clean(text: str) -> None:
    assert "Thinking" not in text
    assert CURSOR not in text
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} reached Slack: {text}"


@pytest.mark.parametrize(
    ("status", "says"),
    [(429, "too many requests"), (500, "couldn't reach Claude"), (529, "overloaded")],
)
async def test_errors_before_the_stream_are_retried_a_bounded_number_of_times(start_bot_on_sqlite, status, says):
    h = await start_bot_on_sqlite(claude_max_retries=2)
    h.claude.enqueue(*[Script(http_error=status, retry_after=0 if status == 429 else None)] * 3)
    sent = await h.mention("hi")
    await h.idle()
    assert len(h.claude.requests) == 3, "one try and two retries, then give up"
    text = h.reply_text("C0001", sent.ts)
    assert says in text
    assert h.claude.requests[-1].request_id in text
    assert_final_and_clean(text)


async def test_a_retry_that_succeeds_is_answered_normally(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(claude_max_retries=2)
    h.claude.enqueue(Script(http_error=529), Script(text="Recovered."))
    sent = await h.mention("hi")
    await h.idle()
    assert h.reply_text("C0001", sent.ts) == "Recovered."


async def test_a_retry_after_of_an_hour_does_not_hang_the_answer(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(claude_max_retries=2, claude_retry_max_wait=1.0)
    h.claude.enqueue(Script(http_error=429, retry_after=3600))
    started = time.monotonic()
    sent = await h.mention("hi")
    await h.idle(timeout=10)
    assert time.monotonic() - started < 10
    assert len(h.claude.requests) == 1
    assert "too many requests" in h.reply_text("C0001", sent.ts)


async def test_an_error_event_mid_stream_keeps_the_text_already_shown(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.claude.enqueue(
        Script(text="one two three four five six seven eight", delta_chars=4, error_after_deltas=3, delay=0.05)
    )
    sent = await h.mention("count")
    await h.idle()
    text = h.reply_text("C0001", sent.ts)
    assert text.startswith("one two three")
    assert "interrupted" in text and h.claude.requests[0].request_id in text
    assert_final_and_clean(text)


async def test_a_dropped_connection_ends_in_a_clear_message(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.claude.enqueue(Script(text="alpha beta gamma delta epsilon", delta_chars=5, drop_after_deltas=2, delay=0.05))
    sent = await h.mention("greek")
    await h.idle()
    text = h.reply_text("C0001", sent.ts)
    assert text.startswith("alpha")
    assert "interrupted" in text
    assert_final_and_clean(text)


async def test_a_stream_that_ends_without_message_stop_is_not_taken_for_a_whole_answer(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.claude.enqueue(Script(text="partial answer that stops", delta_chars=6, end_without_stop_after_deltas=2))
    sent = await h.mention("go")
    await h.idle()
    text = h.reply_text("C0001", sent.ts)
    assert "interrupted" in text
    assert_final_and_clean(text)


async def test_max_tokens_says_the_answer_was_cut(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.claude.enqueue(Script(text="a long answer that is cut", stop_reason="max_tokens"))
    sent = await h.mention("tell me everything")
    await h.idle()
    text = h.reply_text("C0001", sent.ts)
    assert text.startswith("a long answer that is cut")
    assert "length limit" in text
    assert_final_and_clean(text)


async def test_a_refusal_is_explained(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.claude.enqueue(Script(text="", stop_reason="refusal"))
    sent = await h.mention("something bad")
    await h.idle()
    text = h.reply_text("C0001", sent.ts)
    assert "declined" in text
    assert_final_and_clean(text)


async def test_a_misconfigured_api_key_is_reported_without_the_key(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.claude.enqueue(Script(http_error=401))
    sent = await h.mention("hi")
    await h.idle()
    text = h.reply_text("C0001", sent.ts)
    assert "isn't set up correctly" in text
    assert len(h.claude.requests) == 1, "an authentication error is not retried"
    assert_final_and_clean(text)
