"""Slack's requests are acknowledged from a thread of the bot's own (bot/front.py): an event gets its 200 while
the event loop that answers the questions is busy, and is answered once that loop is free again."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

BUSY = 1.5  # seconds the bot's event loop computes, holding the loop (and the GIL, but for its switches)


def post(url: str, body: str, headers: dict[str, str]) -> tuple[int, float]:
    """Sent from another thread (the test's loop is the bot's, and it will be busy): status and seconds taken."""
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, time.monotonic() - started


async def test_an_event_is_acknowledged_while_the_event_loop_is_busy_and_answered_after(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    event = h.mention_event("answer me after the busy second")
    body = h.envelope(event, event_id="EvBUSY0001")
    headers = {"Content-Type": "application/json", **h.signed_headers(body)}
    with ThreadPoolExecutor(1) as pool:
        ack = pool.submit(post, f"{h.url}/slack/events", body, headers)
        busy_until = time.monotonic() + BUSY
        acked_while_busy = False
        while time.monotonic() < busy_until:  # the loop is held: nothing else of the bot's runs meanwhile
            acked_while_busy = acked_while_busy or ack.done()
        status, seconds = ack.result(timeout=10)
    assert status == 200
    assert acked_while_busy and seconds < 0.5, f"acknowledged in {seconds:.3f} s, with the loop busy for {BUSY} s"
    assert not h.replies(event["channel"], event["ts"]), "the answer waits for the loop"
    await asyncio.sleep(0)  # the loop's first turn hands the event over (it was queued while the loop was held)
    await h.idle(timeout=30)
    assert h.reply_text(event["channel"], event["ts"]).startswith("You said: answer me after the busy second")
