"""An answer's presence in Slack through edits: its placeholder, the edits that grow it, and continuation
messages past Slack's size limit. Each message has exactly one `MessageWriter`; the workspace's scheduler
decides when anything is sent.

A `ReplyJournal` (when given) hears of every message posted and of every text about to be shown, so that
the reply can be finished by another process if this one dies (see bot/inflight.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery.call_lane import NORMAL, URGENT
from bot.delivery.edit_writer import MessageWriter
from bot.delivery.markdown import MESSAGE_LIMIT, split_markdown, streaming_view
from bot.delivery.scheduler import SlackScheduler

log = logging.getLogger(__name__)


class ReplyJournal(Protocol):
    async def shown(self, messages: list[str], text: str) -> None:
        """The reply's messages (ts, oldest first) and the text of the last one, as Slack is about to show it.
        Returns soon, written or not: a slow database must not hold up the answer."""


class SlackReply:
    """One answer in a thread: a placeholder that grows, continued in new messages past the size limit."""

    def __init__(
        self,
        client: AsyncWebClient,
        scheduler: SlackScheduler,
        *,
        channel: str,
        thread_ts: str | None,
        journal: ReplyJournal | None = None,
        limit: int = MESSAGE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._scheduler = scheduler
        self.channel = channel
        self.thread_ts = thread_ts
        self._journal = journal
        self._limit = limit
        self._clock = clock
        self._current = ""
        self._writers: list[MessageWriter] = []
        self._posting: asyncio.Task | None = None  # a continuation being posted
        self._first_post_pending = False
        # Set when the reply can no longer be written: deleted by the user, or Slack refused a continuation.
        self.gone = asyncio.Event()
        self._gone_callbacks: list[Callable[[], None]] = []

    @property
    def messages(self) -> list[str]:
        return [writer.ts for writer in self._writers]

    def on_gone(self, callback: Callable[[], None]) -> None:
        if self.gone.is_set():
            callback()
        else:
            self._gone_callbacks.append(callback)

    def _message_gone(self) -> None:
        if not self.gone.is_set():
            self.gone.set()
            for callback in self._gone_callbacks:
                callback()

    def _new_writer(self, ts: str) -> MessageWriter:
        writer = MessageWriter(
            self._client,
            self._scheduler.edits,
            channel=self.channel,
            ts=ts,
            source=lambda: self._current,
            on_gone=self._message_gone,
            checkpoint=None if self._journal is None else lambda text, writer_ts=ts: self._note_edit(writer_ts, text),
            clock=self._clock,
        )
        self._writers.append(writer)
        return writer

    async def _note_edit(self, ts: str, text: str) -> None:
        if self._journal is not None and self._writers and self._writers[-1].ts == ts:
            await self._journal.shown(self.messages, text)

    async def _note_post(self, text: str) -> None:
        if self._journal is None:
            return
        try:
            await self._journal.shown(self.messages, text)
        except Exception as error:  # the answer goes on; only a crash right now would leave this message behind
            log.warning("could not record a message posted in %s (%s)", self.channel, error.__class__.__name__)

    async def _post(self, markdown: str | Callable[[], str], *, priority: int) -> str:
        return await self._scheduler.post_markdown(
            self._client, channel=self.channel, thread_ts=self.thread_ts, markdown=markdown, priority=priority
        )

    async def start(self, placeholder: str) -> str:
        """Post the message the answer will grow into, once the channel's turn comes: the placeholder, or the
        answer's first words when Claude was quicker than the channel. Text may be appended meanwhile."""
        posted = ""

        def first_text() -> str:
            nonlocal posted
            posted = self._current if len(self._current) <= self._limit else ""
            return streaming_view(posted) if posted else placeholder

        self._first_post_pending = True
        try:
            ts = await self._post(first_text, priority=NORMAL)
        except Exception:
            self._message_gone()  # nowhere to write: whoever produces the text must stop
            raise
        finally:
            self._first_post_pending = False
        writer = self._new_writer(ts)
        await self._note_post(posted)
        if len(self._current) > self._limit:
            self._roll_over()
        elif self._current != posted:
            writer.touch()
        return ts

    def append(self, text: str) -> None:
        if self.gone.is_set() or not text:
            return
        self._current += text
        if self._first_post_pending or self._posting is not None:
            return  # the message being posted takes care of the text that waits
        if len(self._current) > self._limit:
            self._roll_over()
        else:
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
            self._new_writer(await self._post(piece, priority=URGENT)).posted_whole()

    async def _continue(self, complete_pieces: list[str]) -> None:
        """Post the continuation; text that arrives meanwhile, however much, lands in it or in further ones."""
        try:
            await self._post_whole(complete_pieces)
            while True:
                if len(self._current) > self._limit:
                    *full, self._current = split_markdown(self._current, self._limit)
                    await self._post_whole(full)
                    continue
                posted_text = self._current
                writer = self._new_writer(await self._post(streaming_view(posted_text), priority=URGENT))
                await self._note_post(posted_text)
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

    @property
    def current_text(self) -> str:
        """The text of the last message (without cursor)."""
        return self._current
