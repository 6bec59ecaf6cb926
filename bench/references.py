"""The approaches other Slack AI bots use, as small implementations run beside the bot.

Each reads the same Claude stream (real anthropic SDK against the same fake) and writes into the same
fake Slack, in its own workspace so that the budgets don't mix:

- every_delta:  an edit on every delta (a direct port of a browser SSE route);
- every_20:     an edit every 20 deltas;
- every_second: an edit every second per message, whatever the other answers do;
- chat_stream:  slack-sdk's `chat_stream()` helper (256-character buffer, start/append/stop).

All retry 429s honestly: they sleep the Retry-After and send again, so their final texts complete.
One kindness a literal port would not have: a message's edits never overlap, and after a wait the
next edit carries the latest text (the states skipped meanwhile are not replayed one by one). A
literal port would replay every delta and take an hour to finish 20 answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anthropic
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery.markdown import markdown_message, streaming_view
from bot.slack_errors import retry_after_seconds

REFERENCES = ("every_delta", "every_20", "every_second", "chat_stream")
PLACEHOLDER = "_Thinking…_"
RECIPIENT_TEAM, RECIPIENT_USER = "T0001", "U0001"

# A policy answers: with this many deltas not yet sent, this long after the previous edit, send now (0),
# check again after so many seconds, or wait for the next delta (None).
Policy = Callable[[int, float], float | None]
POLICIES: dict[str, Policy] = {
    "every_delta": lambda new, since: 0.0 if new >= 1 else None,
    "every_20": lambda new, since: 0.0 if new >= 20 else None,
    "every_second": lambda new, since: None if new == 0 else max(0.0, 1.0 - since),
}


@dataclass
class StreamState:
    text: str = ""
    deltas: int = 0
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Counters:
    rate_limited: int = 0


async def read_claude(claude: anthropic.AsyncAnthropic, question: str, state: StreamState) -> None:
    async with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=16_000, messages=[{"role": "user", "content": question}]
    ) as stream:
        async for text in stream.text_stream:
            state.text += text
            state.deltas += 1
            state.changed.set()
    state.done = True
    state.changed.set()


async def _call_until_accepted(counters: Counters, call: Callable[[], object]):
    while True:
        try:
            return await call()
        except SlackApiError as error:
            wait = retry_after_seconds(error)
            if wait is None:
                raise
            counters.rate_limited += 1
            await asyncio.sleep(wait)


async def edit_loop(
    client: AsyncWebClient, channel: str, ts: str, state: StreamState, policy: Policy, counters: Counters
) -> None:
    loop = asyncio.get_running_loop()
    sent_deltas, last_sent = 0, -1e9
    while True:
        state.changed.clear()
        delay = 0.0 if state.done else policy(state.deltas - sent_deltas, loop.time() - last_sent)
        if delay is None:
            await state.changed.wait()
            continue
        if delay > 0:
            try:
                await asyncio.wait_for(state.changed.wait(), delay)
            except TimeoutError:
                pass
            continue
        deltas, done = state.deltas, state.done

        def update():
            # Re-read on every attempt: after a 429 the edit carries the latest text.
            nonlocal deltas, done
            deltas, done = state.deltas, state.done
            markdown = state.text if done else streaming_view(state.text)
            return client.chat_update(channel=channel, ts=ts, **markdown_message(markdown or "…"))

        last_sent = loop.time()
        await _call_until_accepted(counters, update)
        sent_deltas = deltas
        if done:
            return


async def answer_by_edits(
    kind: str, client: AsyncWebClient, claude, channel: str, thread_ts: str, question: str, counters: Counters
) -> None:
    ts = (
        await _call_until_accepted(
            counters,
            lambda: client.chat_postMessage(channel=channel, thread_ts=thread_ts, **markdown_message(PLACEHOLDER)),
        )
    )["ts"]
    state = StreamState()
    reader = asyncio.get_running_loop().create_task(read_claude(claude, question, state))
    await edit_loop(client, channel, ts, state, POLICIES[kind], counters)
    await reader


class CountingRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack-sdk's own 429 handler (sleeps Retry-After, resends), counting what it handled."""

    def __init__(self, counters: Counters):
        super().__init__(max_retry_count=1000)
        self.counters = counters

    async def _can_retry_async(self, *, state, request, response=None, error=None) -> bool:
        can = await super()._can_retry_async(state=state, request=request, response=response, error=error)
        if can:
            self.counters.rate_limited += 1
        return can


async def answer_by_chat_stream(client: AsyncWebClient, claude, channel: str, thread_ts: str, question: str) -> None:
    # Slack wants the recipient of a stream in a channel; the helper passes them on.
    streamer = await client.chat_stream(
        channel=channel,
        thread_ts=thread_ts,
        buffer_size=256,
        recipient_team_id=RECIPIENT_TEAM,
        recipient_user_id=RECIPIENT_USER,
    )
    async with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=16_000, messages=[{"role": "user", "content": question}]
    ) as stream:
        async for text in stream.text_stream:
            await streamer.append(markdown_text=text)
    await streamer.stop()


def reference_client(kind: str, token: str, api_url: str, counters: Counters) -> AsyncWebClient:
    client = AsyncWebClient(token=token, base_url=api_url, logger=logging.getLogger("bench.reference"))
    if kind == "chat_stream":
        client.retry_handlers.append(CountingRateLimitHandler(counters))
    return client


async def run_reference_answer(
    kind: str, client: AsyncWebClient, claude, channel: str, thread_ts: str, question: str, counters: Counters
) -> None:
    if kind == "chat_stream":
        await answer_by_chat_stream(client, claude, channel, thread_ts, question)
    else:
        await answer_by_edits(kind, client, claude, channel, thread_ts, question, counters)
