"""An answer's presence in Slack: its placeholder, the edits that grow it, and continuation messages.

Each Slack message has exactly one `MessageWriter`; the workspace's `EditScheduler` decides when
that writer may send. Between two edits the writer only remembers that newer text exists, so a
burst of deltas costs nothing and the next edit carries the latest text: intermediate states are
skipped, never queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.edit_scheduler import EditScheduler
from bot.markdown_chunks import MESSAGE_LIMIT, plain_fallback, split_markdown, streaming_view

log = logging.getLogger(__name__)

# The reply is no longer there to edit: stop writing (and stop generating) at once.
GONE_ERRORS = {"message_not_found", "channel_not_found", "cant_update_message", "edit_window_closed", "is_archived"}
NETWORK_ATTEMPTS = 5
POST_ATTEMPTS = 4


def markdown_message(markdown: str) -> dict:
    """The arguments of a message that Slack renders from Markdown, with a plain fallback."""
    return {"text": plain_fallback(markdown), "blocks": [{"type": "markdown", "text": markdown}]}


def retry_after_seconds(error: SlackApiError) -> float | None:
    """Slack's Retry-After for a rate-limited call, None for any other error."""
    response = error.response
    if response.status_code != 429 and response.get("error") != "ratelimited":
        return None
    headers = {k.lower(): v for k, v in (response.headers or {}).items()}
    value = headers.get("retry-after", "1")
    try:
        return max(float(value[0] if isinstance(value, list) else value), 0.5)
    except ValueError:
        return 1.0


async def post_message(client: AsyncWebClient, *, channel: str, thread_ts: str | None, markdown: str) -> str:
    """Post a message, waiting out Slack's per-channel rate limit; returns its ts."""
    for attempt in range(POST_ATTEMPTS):
        try:
            response = await client.chat_postMessage(channel=channel, thread_ts=thread_ts, **markdown_message(markdown))
            return response["ts"]
        except SlackApiError as error:
            wait = retry_after_seconds(error)
            if wait is None or attempt == POST_ATTEMPTS - 1:
                raise
            log.info("chat.postMessage rate-limited in %s; retrying in %.1fs", channel, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


class MessageWriter:
    """The only writer of one Slack message."""

    def __init__(
        self,
        client: AsyncWebClient,
        scheduler: EditScheduler,
        *,
        channel: str,
        ts: str,
        source: Callable[[], str],
        on_gone: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.channel = channel
        self.ts = ts
        self._client = client
        self._scheduler = scheduler
        self._source = source
        self._on_gone = on_gone
        self._clock = clock
        self.final = False
        self._final_markdown = ""
        self.last_edit_done: float | None = None
        self.not_before = 0.0
        self._version = 0
        self._sent_version = 0
        self._shown_length = 0
        self._waiting_since: float | None = None
        self._network_failures = 0
        self.gone = False
        self.failed = False
        self._settled = asyncio.Event()

    def touch(self) -> None:
        """The source has newer text."""
        if self.final or self.gone or self.failed:
            return
        self._version += 1
        if self._waiting_since is None:
            self._waiting_since = self._clock()
        self._scheduler.request(self)

    def finalize(self, markdown: str) -> None:
        """The message's last text; sent as soon as the budget allows, without a cursor."""
        if self.gone or self.failed:
            self._settled.set()
            return
        self.final = True
        self._final_markdown = markdown
        self._version += 1
        if self._waiting_since is None:
            self._waiting_since = self._clock()
        self._scheduler.request(self)

    def posted_whole(self) -> None:
        """The message was posted with its final text already: nothing left to edit."""
        self.final = True
        self._settled.set()

    async def done(self) -> bool:
        """Wait until the final text is shown (True) or cannot be (False)."""
        await self._settled.wait()
        return not (self.gone or self.failed)

    def wants_edit(self) -> bool:
        return not (self.gone or self.failed) and self._version != self._sent_version

    def backlog(self, now: float) -> float:
        """How far behind Slack is: characters waiting, weighted by how long they have waited."""
        waiting = (len(self._final_markdown) if self.final else len(self._source())) - self._shown_length
        return (max(waiting, 0) + 1) * (now - (self._waiting_since or now))

    async def edit(self) -> float | None:
        version = self._version
        markdown = self._final_markdown if self.final else streaming_view(self._source())
        try:
            await self._client.chat_update(channel=self.channel, ts=self.ts, **markdown_message(markdown))
        except SlackApiError as error:
            self.last_edit_done = self._clock()
            wait = retry_after_seconds(error)
            if wait is not None:
                return wait
            self._give_up(error.response.get("error", "unknown_error"))
            return None
        except Exception as error:  # network faults, and anything else the client raises: retry, then give up
            self.last_edit_done = self._clock()
            self._network_failures += 1
            log.warning("chat.update of %s failed (%s), attempt %d", self.ts, error.__class__.__name__, self._network_failures)
            if self._network_failures >= NETWORK_ATTEMPTS:
                self._give_up("network_error")
            else:
                self.not_before = self._clock() + 2 ** self._network_failures * 0.25
            return None
        self.last_edit_done = self._clock()
        self._sent_version = version
        self._shown_length = len(markdown)
        self._waiting_since = None if version == self._version else self.last_edit_done
        if self.final and version == self._version:
            self._settled.set()
        return None

    def _give_up(self, error: str) -> None:
        if error in GONE_ERRORS:
            log.info("message %s in %s is gone (%s); stopping its answer", self.ts, self.channel, error)
            self.gone = True
            self._on_gone()
        else:
            log.error("chat.update of %s in %s failed for good: %s", self.ts, self.channel, error)
            self.failed = True
        self._scheduler.forget(self)
        self._settled.set()


class SlackReply:
    """One answer in a thread: a placeholder that grows, continued in new messages past the size limit."""

    def __init__(
        self,
        client: AsyncWebClient,
        scheduler: EditScheduler,
        *,
        channel: str,
        thread_ts: str | None,
        limit: int = MESSAGE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._scheduler = scheduler
        self.channel = channel
        self.thread_ts = thread_ts
        self._limit = limit
        self._clock = clock
        self._current = ""
        self._writers: list[MessageWriter] = []
        self._posting: asyncio.Task | None = None
        # Set when the reply can no longer be written: deleted by the user, or Slack refused a continuation.
        self.gone = asyncio.Event()
        self._gone_callbacks: list[Callable[[], None]] = []

    def on_gone(self, callback: Callable[[], None]) -> None:
        self._gone_callbacks.append(callback)

    def _message_gone(self) -> None:
        if not self.gone.is_set():
            self.gone.set()
            for callback in self._gone_callbacks:
                callback()

    def _new_writer(self, ts: str) -> MessageWriter:
        writer = MessageWriter(
            self._client,
            self._scheduler,
            channel=self.channel,
            ts=ts,
            source=lambda: self._current,
            on_gone=self._message_gone,
            clock=self._clock,
        )
        self._writers.append(writer)
        return writer

    async def start(self, placeholder: str) -> str:
        """Post the placeholder that the answer will grow into."""
        ts = await post_message(self._client, channel=self.channel, thread_ts=self.thread_ts, markdown=placeholder)
        self._new_writer(ts)
        return ts

    def append(self, text: str) -> None:
        if self.gone.is_set() or not text:
            return
        self._current += text
        if len(self._current) > self._limit:
            self._roll_over()
        elif self._posting is None:
            self._writers[-1].touch()

    def _roll_over(self) -> None:
        """The current message is full: freeze it and continue in a new message of the same thread."""
        if self._posting is not None:
            return  # the continuation is being posted; it takes care of the text that waits
        *full, rest = split_markdown(self._current, self._limit)
        self._writers[-1].finalize(full[0])
        self._current = rest
        self._posting = asyncio.get_running_loop().create_task(self._continue(full[1:]))

    async def _post_whole(self, pieces: list[str]) -> None:
        for piece in pieces:
            ts = await post_message(self._client, channel=self.channel, thread_ts=self.thread_ts, markdown=piece)
            self._new_writer(ts).posted_whole()

    async def _continue(self, complete_pieces: list[str]) -> None:
        """Post the continuation; text that arrives meanwhile, however much, lands in it or in further ones."""
        try:
            await self._post_whole(complete_pieces)
            while True:
                if len(self._current) > self._limit:
                    *full, self._current = split_markdown(self._current, self._limit)
                    await self._post_whole(full)
                    continue
                ts = await post_message(
                    self._client, channel=self.channel, thread_ts=self.thread_ts, markdown=streaming_view(self._current)
                )
                writer = self._new_writer(ts)
                if len(self._current) <= self._limit:
                    writer.touch()
                    return
                # More arrived during the post than the new message holds: freeze it too and go on.
                *full, self._current = split_markdown(self._current, self._limit)
                writer.finalize(full[0])
                await self._post_whole(full[1:])
        except Exception:
            # Without a message to write into, the rest of the answer cannot be shown: stop it like a deleted reply.
            log.exception("posting a continuation in %s failed; stopping the answer", self.channel)
            self._message_gone()
        finally:
            self._posting = None

    async def finish(self, tail: str = "") -> bool:
        """Show the whole answer (plus `tail`, such as a notice) without the cursor; wait until Slack shows it."""
        if self._writers and not self.gone.is_set():
            self._current += tail
            if len(self._current) > self._limit:
                self._roll_over()
            while self._posting is not None:
                await self._posting
            if not self.gone.is_set():
                self._writers[-1].finalize(self._current or "_(no answer)_")
        results = [await writer.done() for writer in self._writers if writer.final]
        return bool(results) and all(results) and not self.gone.is_set()
