"""Stopping an answer while it is written (Slack's Stop on a native stream, the Stop button on the edit path),
and the feedback buttons every finished answer carries."""

from __future__ import annotations

import asyncio
import time

from bot import user_messages as say
from bot.surfaces.answer_controls import STOP_ACTION
from tests.fakes.anthropic import Script
from tests.harness import TEAM
from tests.test_credits_e2e import usage_rows

LONG = " ".join(f"word{i}" for i in range(2000))


async def until(condition, timeout: float = 10.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


async def a_long_answer_under_way(h, **mention):
    h.claude.enqueue(Script(text=LONG, delta_chars=10, delay=0.02))
    sent = await h.mention("go on and on", **mention)
    await h.claude.wait_for_requests(1)
    await until(
        lambda: len(h.slack.calls_to("chat.appendStream") + h.slack.calls_to("chat.update")) >= 3,
        what="the answer to grow",
    )
    return sent


async def test_slacks_stop_on_a_native_stream_stops_claude_at_once_and_charges_what_was_used(
    start_bot_on_each_database,
):
    h = await start_bot_on_each_database(
        slack_streaming="native", slack_update_interval=0.1, ai_credits_per_message=None
    )
    sent = await a_long_answer_under_way(h)
    stopped_at = time.monotonic()
    event = h.slack.press_stop("C0001", sent.ts, "U0001")
    assert event["streaming_message_ts"], "Slack names the stream it stopped"
    assert (await h.send_event(event)).status == 200
    received = h.claude.requests[0]
    await until(lambda: received.cancelled, 2.0, "Claude's connection to close")
    assert time.monotonic() - stopped_at < 2.0
    await h.idle()
    (message,) = h.slack.thread("C0001", sent.ts)
    shown = h.slack.visible_markdown(message)
    assert shown.endswith(say.stopped_by("U0001")), "a short notice ends it"
    kept = shown.removesuffix("\n\n" + say.stopped_by("U0001"))
    assert LONG.startswith(kept) and len(kept) > 50, "the text so far stays"
    (charge,) = await usage_rows(h, sent.event_id)
    assert charge.amount < 0, "charged for what Claude consumed"
    session = h.slack.sessions[("C0001", sent.ts)]
    assert session["status"] == "active", "the session is set back to active"


async def test_a_stream_stopped_where_no_event_reaches_this_process_stops_at_its_next_append(start_bot_on_sqlite):
    """The agent_session_stopped event went to another process: the stream's next append says stopped_by_user."""
    h = await start_bot_on_sqlite(slack_streaming="native", slack_update_interval=0.1)
    sent = await a_long_answer_under_way(h)
    stopped_at = time.monotonic()
    h.slack.press_stop("C0001", sent.ts, "U0001")  # not delivered
    await until(lambda: h.claude.requests[0].cancelled, 2.0, "Claude's connection to close")
    assert time.monotonic() - stopped_at < 2.0
    await h.idle()
    shown = h.slack.visible_markdown(h.slack.thread("C0001", sent.ts)[0])
    assert shown.endswith(say.stopped_by(None))


async def test_the_stop_button_of_the_edit_path_obeys_only_the_asker_or_an_admin(start_bot_on_each_database):
    h = await start_bot_on_each_database(slack_update_interval=0.1)
    h.slack.add_user(TEAM, "U0002", name="bystander")
    h.slack.add_user(TEAM, "UADMIN", is_admin=True, name="admin")
    sent = await a_long_answer_under_way(h)
    (message,) = h.slack.thread("C0001", sent.ts)
    assert any(b["type"] == "actions" and b["elements"][0]["action_id"] == STOP_ACTION for b in message.blocks)

    status, _ = await h.press(message, STOP_ACTION, user="U0002")
    assert status == 200
    await h.responses(1)
    refusal = h.last_response()
    assert refusal["response_type"] == "ephemeral" and refusal["text"] == say.only_the_asker_can_stop("U0001")
    assert not h.claude.requests[0].cancelled

    status, _ = await h.press(message, STOP_ACTION, user="UADMIN")
    assert status == 200
    await until(lambda: h.claude.requests[0].cancelled, 2.0, "Claude's connection to close")
    await h.idle()
    (message,) = h.slack.thread("C0001", sent.ts)
    assert h.slack.visible_markdown(message).endswith(say.stopped_by("UADMIN"))
    assert not any(b["type"] == "actions" for b in message.blocks), "the Stop button goes with the final text"


async def test_the_asker_can_stop_their_own_answer(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_update_interval=0.1)
    sent = await a_long_answer_under_way(h)
    (message,) = h.slack.thread("C0001", sent.ts)
    await h.press(message, STOP_ACTION, user="U0001")
    await until(lambda: h.claude.requests[0].cancelled, 2.0, "Claude's connection to close")
    await h.idle()
    assert h.slack.visible_markdown(h.slack.thread("C0001", sent.ts)[0]).endswith(say.stopped_by("U0001"))


async def test_feedback_is_stored_once_per_person_and_answer_and_counted_in_the_home_tab(start_bot_on_each_database):
    h = await start_bot_on_each_database()
    sent = await h.mention("rate me")
    await h.idle()
    (message,) = h.slack.thread("C0001", sent.ts)
    assert (await h.press(message, "answer_feedback:good", user="U0001"))[0] == 200
    await h.responses(1)
    assert h.last_response()["response_type"] == "ephemeral"
    assert h.last_response()["text"] == say.FEEDBACK_THANKS
    await h.press(message, "answer_feedback:bad", user="U0001")  # changed their mind: replaces
    await h.press(message, "answer_feedback:good", user="U0002")
    await h.responses(3)
    await h.open_home()
    view = await h.home()
    (feedback,) = [b for b in view["blocks"] if b.get("block_id") == "feedback"]
    assert "1 good" in feedback["elements"][0]["text"] and "1 bad" in feedback["elements"][0]["text"]


async def test_a_stop_asked_through_another_process_reaches_the_answer_at_its_next_checkpoint(start_bot_on_sqlite):
    """The click reached another process: it can only write the request into the answer's in-flight record."""
    h = await start_bot_on_sqlite(slack_update_interval=0.1)
    sent = await a_long_answer_under_way(h)
    asked = await h.services.journal.request_stop(record_id=f"answer:{TEAM}:{sent.event_id}", by="U0001")
    assert asked == 1
    await until(lambda: h.claude.requests[0].cancelled, 2.0, "Claude's connection to close")
    await h.idle()
    assert h.slack.visible_markdown(h.slack.thread("C0001", sent.ts)[0]).endswith(say.stopped_by("U0001"))
