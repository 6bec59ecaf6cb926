"""The only writer of one message that Slack streams natively (chat.startStream, appendStream, stopStream).

The stream starts with the message's first text, grows by the deltas the workspace's `appends` lane lets
through (the lane picks the stream most behind, as for edits), and ends with a stop that carries the rest
of the text and the blocks under it. Slack renders the growth itself: no cursor, no fence juggling.

When Slack will not stream the message (a channel type it does not stream in, the stream expired, the
method is unknown, …) the same message goes on by edits: a `MessageWriter` on the stream's own ts, or on a
new post when no stream was started. Nothing is lost or sent twice: only text past `sent` is ever appended,
and an edit replaces the whole text. When the user stops the stream (Slack's Stop), `on_stopped` is called
and the final text (what was written, and a notice) is put in place by an edit, which Slack allows then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery.call_lane import NORMAL, URGENT
from bot.delivery.edit_writer import GONE_ERRORS, Checkpoint, MessageWriter
from bot.delivery.markdown import streaming_view
from bot.delivery.scheduler import SlackScheduler
from bot.metrics import VISIBLE_LAG
from bot.slack_errors import retry_after_seconds, slack_error, surely_not_done

log = logging.getLogger(__name__)

STOPPED_BY_USER = "stopped_by_user"
APPEND_ATTEMPTS = 5
# The stream is over, but the message is there: an edit can replace it.
STREAM_ENDED = {"message_not_in_streaming_state", STOPPED_BY_USER}


class StreamWriter:
    def __init__(
        self,
        client: AsyncWebClient,
        scheduler: SlackScheduler,
        *,
        channel: str,
        thread_ts: str,
        recipient_team_id: str,
        recipient_user_id: str,
        source: Callable[[], str],
        on_gone: Callable[[], None],
        on_stopped: Callable[[], None],
        checkpoint: Checkpoint | None = None,
        live_blocks: list[dict] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.channel = channel
        self.thread_ts = thread_ts
        self._recipient: dict[str, Any] = {
            "recipient_team_id": recipient_team_id,
            "recipient_user_id": recipient_user_id,
        }
        self._client = client
        self._scheduler = scheduler
        self._source = source
        self._on_gone = on_gone
        self._on_stopped = on_stopped
        self._checkpoint = checkpoint
        self._live_blocks = live_blocks
        self._clock = clock
        self.ts: str | None = None
        self.final = False
        self.last_write_done: float | None = None
        self.not_before = 0.0
        self._sent = 0
        self._streaming = False
        self._edit: MessageWriter | None = None  # once Slack will not stream this message
        self._opening: asyncio.Task | None = None
        self._closing: asyncio.Task | None = None
        self._appended = asyncio.Event()  # no append in flight
        self._appended.set()
        self._failures = 0
        self._waiting_since: float | None = None
        self.gone = False
        self.failed = False
        self.stopped_by_user = False
        self._settled = asyncio.Event()
        scheduler.appends.adopt(self)

    # -- what the reply sees -------------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        """How much of the text Slack keeps whatever comes next: what was streamed (unless edits took over)."""
        return 0 if self._edit is not None else self._sent

    @property
    def streamed(self) -> bool:
        return self._edit is None

    def open(self) -> asyncio.Task:
        """Start the message with the text there is (its first words); the task's result is the ts."""
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open(), name="chat.startStream")
        return self._opening

    def touch(self) -> None:
        """The source has newer text."""
        if self._edit is not None:
            self._edit.touch()
            return
        if self.final or self.gone or self.failed or self.stopped_by_user or not self._streaming:
            return
        if self._waiting_since is None:
            self._waiting_since = self._clock()
        self._scheduler.appends.request(self)

    def finalize(self, markdown: str, blocks: list[dict] | None = None) -> None:
        """The message's whole last text, which starts with what was streamed, and the blocks under it."""
        self.final = True
        self._closing = asyncio.get_running_loop().create_task(self._close(markdown, blocks), name="chat.stopStream")

    async def done(self) -> bool:
        await self._settled.wait()
        if self._edit is not None:
            return await self._edit.done()
        return not (self.gone or self.failed)

    # -- the appends lane ----------------------------------------------------------------------------------

    def wants_write(self) -> bool:
        return (
            self._edit is None
            and self._streaming
            and not (self.final or self.gone or self.failed or self.stopped_by_user)
            and len(self._source()) > self._sent
        )

    def backlog(self, now: float) -> float:
        return (len(self._source()) - self._sent + 1) * (now - (self._waiting_since or now))

    async def write(self) -> float | None:
        text = self._source()
        delta = text[self._sent :]
        if not delta or not self._streaming or self.final:
            return None  # once final, the stop carries the rest
        assert self.ts is not None  # streaming: the stream was opened
        self._appended.clear()  # before anything awaits: the stop must wait for this append
        waiting_since = self._waiting_since
        await self._record(text)
        try:
            await self._client.chat_appendStream(channel=self.channel, ts=self.ts, markdown_text=delta)
        except SlackApiError as error:
            wait = retry_after_seconds(error)
            if wait is not None:
                return wait
            await self._append_refused(slack_error(error), again=surely_not_done(error))
            return None
        except Exception as error:
            await self._append_refused(error.__class__.__name__, again=surely_not_done(error))
            return None
        finally:
            self.last_write_done = self._clock()
            self._appended.set()
        self._sent += len(delta)
        self._failures = 0
        if waiting_since is not None:
            VISIBLE_LAG.observe(self.last_write_done - waiting_since)
        self._waiting_since = None if len(self._source()) == self._sent else self.last_write_done
        return None

    async def _append_refused(self, code: str, *, again: bool) -> None:
        """`again`: the append surely did nothing, so it may be sent again. One that may have been done (a
        timeout, Slack's internal_error) must not be: the message goes on by edits, which replace it all."""
        if code == STOPPED_BY_USER:
            self._stream_over()
            self.stopped_by_user = True
            log.info("the stream %s in %s was stopped by its user", self.ts, self.channel)
            self._on_stopped()
        elif code in GONE_ERRORS:
            self._stream_over()
            self._gone()
        elif again and self._failures + 1 < APPEND_ATTEMPTS:
            self._failures += 1
            self.not_before = self._clock() + 0.1 * 2**self._failures
        else:
            log.info("Slack stopped streaming %s in %s (%s); the answer goes on by edits", self.ts, self.channel, code)
            await self._to_edits(still_streaming=code not in STREAM_ENDED)

    # -- start and stop ------------------------------------------------------------------------------------

    async def _open(self) -> str | None:
        def first_text() -> dict:
            text = self._source()
            self._sent = len(text)
            return {"markdown_text": text}

        try:
            response = await self._scheduler.call(
                self._client,
                "chat.startStream",
                channel=self.channel,
                thread_ts=self.thread_ts,
                at_turn=first_text,
                **self._recipient,
            )
        except SlackApiError as error:
            self._sent = 0
            log.info("Slack would not stream in %s (%s); posting the answer instead", self.channel, slack_error(error))
            await self._post_instead()
            return self.ts
        self.ts = response["ts"]
        self._streaming = True
        self._scheduler.open_streams += 1
        if len(self._source()) > self._sent:
            self.touch()
        return self.ts

    async def _post_instead(self) -> None:
        """No stream: the message is posted, then edited (raises when even the post is refused)."""
        posted = ""

        def text() -> str:
            nonlocal posted
            posted = self._source()
            return streaming_view(posted)

        ts = await self._scheduler.post_markdown(
            self._client,
            channel=self.channel,
            thread_ts=self.thread_ts,
            markdown=text,
            blocks=self._live_blocks,
            priority=NORMAL,
        )
        self.ts = ts
        self._edit = self._new_edit_writer()
        if self._source() != posted:
            self._edit.touch()

    def _new_edit_writer(self) -> MessageWriter:
        assert self.ts is not None  # the message of the stream, or the one posted instead
        return MessageWriter(
            self._client,
            self._scheduler.edits,
            channel=self.channel,
            ts=self.ts,
            source=self._source,
            on_gone=self._on_gone,
            checkpoint=self._checkpoint,
            live_blocks=self._live_blocks,
            clock=self._clock,
        )

    async def _to_edits(self, *, still_streaming: bool) -> None:
        """Go on by chat.update on the stream's own message: the first edit puts the whole text in place."""
        if still_streaming:
            try:  # an open stream cannot be edited: end it first (whatever it shows is replaced next)
                await self._scheduler.call(
                    self._client, "chat.stopStream", channel=self.channel, ts=self.ts, priority=URGENT
                )
            except Exception as error:
                log.info("could not end the stream %s before editing it (%s)", self.ts, error.__class__.__name__)
        self._stream_over()
        self._edit = self._new_edit_writer()
        self._edit.touch()

    def _stream_over(self) -> None:
        if self._streaming:
            self._streaming = False
            self._scheduler.open_streams -= 1

    async def _close(self, markdown: str, blocks: list[dict] | None) -> None:
        try:
            if self._opening is not None:
                await self._opening
            if self._edit is None and self.ts is None:
                await self._post_whole(markdown, blocks)
                return
            await self._appended.wait()  # an append in flight ends before the stop
            if self._edit is None and self._streaming and await self._stop(markdown, blocks):
                return
            if self.gone:
                return
            if self._edit is None:
                self._edit = self._new_edit_writer()  # the stream ended without our stop (the user's Stop, or expiry)
            self._edit.finalize(markdown, blocks)
        except Exception:
            log.exception("could not finish message %s in %s", self.ts, self.channel)
            self.failed = True
        finally:
            self._settled.set()

    async def _stop(self, markdown: str, blocks: list[dict] | None) -> bool:
        """End the stream with the rest of the text; False when it must be finished by an edit instead."""
        rest = markdown[self._sent :]
        await self._record(markdown)
        extra: dict[str, Any] = {}
        if rest:
            extra["markdown_text"] = rest
        if blocks:
            extra["blocks"] = blocks
        try:
            await self._scheduler.call(
                self._client, "chat.stopStream", channel=self.channel, ts=self.ts, priority=URGENT, **extra
            )
        except SlackApiError as error:
            code = slack_error(error)
            self._stream_over()
            if code in GONE_ERRORS:
                self._gone()
            else:
                log.info(
                    "could not stop the stream %s in %s (%s); finishing it by an edit", self.ts, self.channel, code
                )
            return False
        self._stream_over()
        if rest and self._waiting_since is not None:
            VISIBLE_LAG.observe(self._clock() - self._waiting_since)
        self._sent = len(markdown)
        return True

    async def _post_whole(self, markdown: str, blocks: list[dict] | None) -> None:
        """The answer ended before its first words were streamed (no text, an error): one message says it all."""
        self.ts = await self._scheduler.post_markdown(
            self._client,
            channel=self.channel,
            thread_ts=self.thread_ts,
            markdown=markdown,
            blocks=blocks,
            priority=NORMAL,
        )

    def _gone(self) -> None:
        if not self.gone:
            self.gone = True
            log.info("message %s in %s is gone; stopping its answer", self.ts, self.channel)
            self._on_gone()

    async def _record(self, text: str) -> None:
        if self._checkpoint is None:
            return
        try:
            await self._checkpoint(text)
        except Exception as error:
            log.warning("could not checkpoint message %s (%s)", self.ts, error.__class__.__name__)
