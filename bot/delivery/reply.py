"""An answer's presence in Slack: one or more messages of a thread, growing as Claude writes.

Each message has exactly one writer, and the workspace's scheduler decides when anything is sent:
- a `MessageWriter` for a message that grows by `chat.update` edits (the edit path, which works everywhere);
- a `StreamWriter` for a message Slack streams natively (which goes on by edits when Slack will not).

`mode` says which: "edit" posts a placeholder at once and edits it; "native" streams every message;
"auto" streams a message when the workspace's stream budgets allow a new stream at the moment it opens,
and otherwise posts it with the words written so far and edits it. In "native" and "auto" nothing is
posted before Claude's first words (the answer shows its loading status meanwhile).

Past Slack's size limit the message is closed (code fences closed and reopened) and the answer goes on
in a new message of the thread. A `ReplyJournal` (when given) hears of every message opened and of every
text about to be shown, so that the reply can be finished by another process if this one dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery.call_lane import NORMAL, URGENT
from bot.delivery.edit_writer import MessageWriter
from bot.delivery.markdown import MESSAGE_LIMIT, split_markdown, streaming_view
from bot.delivery.scheduler import SlackScheduler
from bot.delivery.stream_writer import StreamWriter

log = logging.getLogger(__name__)

Mode = Literal["edit", "native", "auto"]
Writer = MessageWriter | StreamWriter
NO_ANSWER = "_(no answer)_"


class ReplyJournal(Protocol):
    async def shown(self, messages: list[str], text: str) -> None:
        """The reply's messages (ts, oldest first) and the text of the last one, as Slack is about to show it.
        Returns soon, written or not: a slow database must not hold up the answer."""


@dataclass(frozen=True)
class Recipient:
    """Who the answer is for: Slack wants it for a stream (`recipient_team_id`, `recipient_user_id`)."""

    team_id: str
    user_id: str


class SlackReply:
    def __init__(
        self,
        client: AsyncWebClient,
        scheduler: SlackScheduler,
        *,
        channel: str,
        thread_ts: str | None,
        mode: Mode = "edit",
        recipient: Recipient | None = None,
        journal: ReplyJournal | None = None,
        live_blocks: list[dict] | None = None,
        limit: int = MESSAGE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._scheduler = scheduler
        self.channel = channel
        self.thread_ts = thread_ts
        # A stream is a reply in a thread, for someone: without both, every message is edited.
        self.mode: Mode = mode if thread_ts and recipient else "edit"
        self._recipient = recipient
        self._journal = journal
        self._live_blocks = live_blocks  # under each message while it is written (a Stop button)
        self._limit = limit
        self._clock = clock
        self._current = ""
        self._writers: list[Writer] = []
        self._opening: asyncio.Task | None = None  # the first message being opened
        self._posting: asyncio.Task | None = None  # a continuation being opened
        # Set when the reply can no longer be written: deleted by the user, or Slack refused a message.
        self.gone = asyncio.Event()
        self._gone_callbacks: list[Callable[[], object]] = []
        self.stopped_by_user = False
        self._stopped_callbacks: list[Callable[[], None]] = []

    @property
    def messages(self) -> list[str]:
        return [writer.ts for writer in self._writers if writer.ts]

    @property
    def current_text(self) -> str:
        """The text of the last message (without cursor)."""
        return self._current

    @property
    def streamed(self) -> bool:
        """Whether any message of the reply was streamed natively."""
        return any(isinstance(writer, StreamWriter) and writer.ts for writer in self._writers)

    def on_gone(self, callback: Callable[[], object]) -> None:
        if self.gone.is_set():
            callback()
        else:
            self._gone_callbacks.append(callback)

    def on_stopped(self, callback: Callable[[], None]) -> None:
        """`callback` runs when the user stops the answer from Slack (the Stop of an agent session)."""
        self._stopped_callbacks.append(callback)

    def _message_gone(self) -> None:
        if not self.gone.is_set():
            self.gone.set()
            for callback in self._gone_callbacks:
                callback()

    def _stopped(self) -> None:
        if not self.stopped_by_user:
            self.stopped_by_user = True
            for callback in self._stopped_callbacks:
                callback()

    # -- opening messages ---------------------------------------------------------------------------------

    async def start(self, placeholder: str) -> None:
        """The edit path posts the message the answer grows into once the channel's turn comes: the
        placeholder, or the first words when Claude was quicker than the channel. The other modes open
        the first message with the first words (`append`)."""
        if self.mode == "edit":
            self._opening = asyncio.current_task()
            await self._open_first(placeholder)

    async def _open_first(self, placeholder: str = "") -> None:
        await self._open(placeholder=placeholder, priority=NORMAL)
        if len(self._current) > self._limit:
            self._roll_over()  # more came while the message opened than it holds

    def _streams_now(self) -> bool:
        return self.mode == "native" or (self.mode == "auto" and self._scheduler.may_start_stream(self.channel))

    async def _open(self, *, placeholder: str = "", priority: int = URGENT) -> Writer:
        """A new message holding the text there is when Slack takes it; raises when Slack refuses it."""
        try:
            writer: Writer
            if self._streams_now():
                writer = self._new_stream_writer()
                self._writers.append(writer)
                await writer.open()
            else:
                writer = await self._post_message(placeholder, priority)
        except Exception:
            self._message_gone()  # nowhere to write: whoever produces the text must stop
            raise
        await self._note_post(self._current)
        return writer

    async def _post_message(self, placeholder: str, priority: int) -> MessageWriter:
        posted = ""

        def first_text() -> str:
            nonlocal posted
            posted = self._current if len(self._current) <= self._limit else ""
            return streaming_view(posted) if posted else placeholder

        ts = await self._post(first_text, blocks=self._live_blocks, priority=priority)
        writer = self._new_edit_writer(ts)
        if self._current != posted and len(self._current) <= self._limit:
            writer.touch()
        return writer

    def _new_edit_writer(self, ts: str) -> MessageWriter:
        writer = MessageWriter(
            self._client,
            self._scheduler.edits,
            channel=self.channel,
            ts=ts,
            source=lambda: self._current,
            on_gone=self._message_gone,
            checkpoint=self._checkpoint_for(),
            live_blocks=self._live_blocks,
            clock=self._clock,
        )
        self._writers.append(writer)
        return writer

    def _new_stream_writer(self) -> StreamWriter:
        assert self.thread_ts and self._recipient
        return StreamWriter(
            self._client,
            self._scheduler,
            channel=self.channel,
            thread_ts=self.thread_ts,
            recipient_team_id=self._recipient.team_id,
            recipient_user_id=self._recipient.user_id,
            source=lambda: self._current,
            on_gone=self._message_gone,
            on_stopped=self._stopped,
            checkpoint=self._checkpoint_for(),
            live_blocks=self._live_blocks,
            clock=self._clock,
        )

    def _checkpoint_for(self):
        journal = self._journal
        if journal is None:
            return None
        position = len(self._writers)  # the writer about to be added

        async def checkpoint(text: str) -> None:
            if len(self._writers) == position + 1:  # only the last message's text is the reply's current text
                await journal.shown(self.messages, text)

        return checkpoint

    async def _note_post(self, text: str) -> None:
        if self._journal is None:
            return
        try:
            await self._journal.shown(self.messages, text)
        except Exception as error:  # the answer goes on; only a crash right now would leave this message behind
            log.warning("could not record a message posted in %s (%s)", self.channel, error.__class__.__name__)

    async def _post(self, markdown: str | Callable[[], str], *, blocks: list[dict] | None = None, priority: int) -> str:
        return await self._scheduler.post_markdown(
            self._client,
            channel=self.channel,
            thread_ts=self.thread_ts,
            markdown=markdown,
            blocks=blocks,
            priority=priority,
        )

    # -- growing --------------------------------------------------------------------------------------------

    def append(self, text: str) -> None:
        if self.gone.is_set() or not text:
            return
        self._current += text
        if not self._writers and self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open_first(), name="first message")
            return
        if self._posting is not None or not self._writers or self._writers[-1].ts is None:
            return  # the message being opened takes care of the text that waits
        if len(self._current) > self._limit:
            self._roll_over()
        else:
            self._writers[-1].touch()

    async def opened(self) -> None:
        """Wait until the first message is there (raises when Slack refused it)."""
        if self._opening is not None and self._opening is not asyncio.current_task():
            await self._opening

    def _roll_over(self) -> None:
        """The current message is full: close it and continue in a new message of the same thread."""
        if self._posting is not None:
            return  # the continuation is being opened; it takes care of the text that waits
        *full, rest = split_markdown(self._current, self._limit, keep=self._writers[-1].sent)
        self._writers[-1].finalize(full[0])
        self._current = rest
        self._posting = asyncio.get_running_loop().create_task(self._continue(full[1:]))

    async def _post_whole(self, pieces: list[str]) -> None:
        for piece in pieces:
            self._new_edit_writer(await self._post(piece, priority=URGENT)).posted_whole()

    async def _continue(self, complete_pieces: list[str]) -> None:
        """Open the continuation; text that arrives meanwhile, however much, lands in it or in further ones."""
        try:
            await self._post_whole(complete_pieces)
            while True:
                if len(self._current) > self._limit:
                    *full, self._current = split_markdown(self._current, self._limit)
                    await self._post_whole(full)
                    continue
                writer = await self._open()
                if len(self._current) <= self._limit:
                    writer.touch()
                    return
                # More arrived while it opened than the new message holds: close it too and go on.
                *full, self._current = split_markdown(self._current, self._limit, keep=writer.sent)
                writer.finalize(full[0])
                await self._post_whole(full[1:])
        except Exception:
            # Without a message to write into, the rest of the answer cannot be shown: stop it like a deleted reply.
            log.exception("opening a continuation in %s failed; stopping the answer", self.channel)
            self._message_gone()
        finally:
            self._posting = None

    # -- finishing ------------------------------------------------------------------------------------------

    async def quiesce(self) -> None:
        """Wait until no continuation is being opened: then the messages and the current text agree."""
        while self._posting is not None:
            await self._posting

    async def finish(self, tail: str = "", blocks: list[dict] | None = None) -> bool:
        """Show the whole answer (plus `tail`, such as a notice, and `blocks` under it) without the cursor;
        wait until Slack shows it."""
        try:
            await self.opened()
        except Exception:
            return False
        if self.gone.is_set():
            return False
        self._current += tail
        if not self._writers:  # nothing was written before the end (an error, an empty answer): one message
            ts = await self._post(self._current or NO_ANSWER, blocks=blocks, priority=NORMAL)
            self._new_edit_writer(ts).posted_whole()
            await self._note_post(self._current)
            return True
        if len(self._current) > self._limit:
            self._roll_over()
        while self._posting is not None:
            await self._posting
        if not self.gone.is_set():
            self._writers[-1].finalize(self._current or NO_ANSWER, blocks)
        results = [await writer.done() for writer in self._writers if writer.final]
        return bool(results) and all(results) and not self.gone.is_set()
