"""The only writer of one Slack message that grows by `chat.update` edits.

The workspace's `WriterLane` decides when the writer may send; between two edits the writer only
remembers that newer text exists. Before each edit, `checkpoint` (when given) records durably the
text about to be shown, so that a process killed mid-answer leaves behind at least what Slack shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery.markdown import markdown_message, streaming_view
from bot.delivery.writer_lane import WriterLane
from bot.metrics import VISIBLE_LAG
from bot.slack_errors import is_transient_slack_error, retry_after_seconds, slack_error

log = logging.getLogger(__name__)

# The message is no longer there to edit: stop writing (and stop generating) at once.
GONE_ERRORS = {"message_not_found", "channel_not_found", "cant_update_message", "edit_window_closed", "is_archived"}
MAX_BACKOFF = 30.0

# Records the text about to be shown; must return soon even when the database is slow (see answer.Checkpoints).
Checkpoint = Callable[[str], Awaitable[None]]


class MessageWriter:
    def __init__(
        self,
        client: AsyncWebClient,
        lane: WriterLane,
        *,
        channel: str,
        ts: str,
        source: Callable[[], str],
        on_gone: Callable[[], None],
        checkpoint: Checkpoint | None = None,
        live_blocks: list[dict] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.channel = channel
        self.ts = ts
        self._live_blocks = live_blocks  # under the text while it is being written (a Stop button)
        self._final_blocks: list[dict] | None = None
        self._client = client
        self._lane = lane
        self._source = source
        self._on_gone = on_gone
        self._checkpoint = checkpoint
        self._clock = clock
        self.final = False
        self._final_markdown = ""
        self.last_write_done: float | None = None
        self.not_before = 0.0
        self._version = 0
        self._sent_version = 0
        self._shown_length = 0
        self._waiting_since: float | None = None
        self._failures = 0
        self.gone = False
        self.failed = False
        self.error: str | None = None
        self._settled = asyncio.Event()
        lane.adopt(self)

    def touch(self) -> None:
        """The source has newer text."""
        if self.final or self.gone or self.failed:
            return
        self._version += 1
        if self._waiting_since is None:
            self._waiting_since = self._clock()
        self._lane.request(self)

    @property
    def sent(self) -> int:
        """How much of the text Slack keeps whatever comes next: nothing, an edit replaces it all."""
        return 0

    def finalize(self, markdown: str, blocks: list[dict] | None = None) -> None:
        """The message's last text (and the blocks under it); sent as soon as the budget allows, without a cursor."""
        if self.gone or self.failed:
            self._settled.set()
            return
        self.final = True
        self._final_markdown = markdown
        self._final_blocks = blocks
        self._version += 1
        if self._waiting_since is None:
            self._waiting_since = self._clock()
        self._lane.request(self)

    def posted_whole(self) -> None:
        """The message was posted with its final text already: nothing left to edit."""
        self.final = True
        self._settled.set()

    async def done(self) -> bool:
        """Wait until the final text is shown (True) or cannot be (False)."""
        await self._settled.wait()
        return not (self.gone or self.failed)

    def wants_write(self) -> bool:
        return not (self.gone or self.failed) and self._version != self._sent_version

    def backlog(self, now: float) -> float:
        """How far behind Slack is: characters waiting, weighted by how long they have waited."""
        waiting = (len(self._final_markdown) if self.final else len(self._source())) - self._shown_length
        return (max(waiting, 0) + 1) * (now - (self._waiting_since or now))

    async def write(self) -> float | None:
        version, waiting_since = self._version, self._waiting_since
        text = self._final_markdown if self.final else self._source()
        markdown = text if self.final else streaming_view(text)
        blocks = self._final_blocks if self.final else self._live_blocks
        await self._record(text)
        try:
            await self._client.chat_update(channel=self.channel, ts=self.ts, **markdown_message(markdown, blocks))
        except SlackApiError as error:
            self.last_write_done = self._clock()
            wait = retry_after_seconds(error)
            if wait is not None:
                return wait
            if is_transient_slack_error(error):
                self._failed_once(slack_error(error))
            else:
                self._give_up(slack_error(error))
            return None
        except Exception as error:  # network faults, and anything else the client raises: retry, then give up
            self.last_write_done = self._clock()
            self._failed_once(error.__class__.__name__)
            return None
        self.last_write_done = self._clock()
        if waiting_since is not None:
            VISIBLE_LAG.observe(self.last_write_done - waiting_since)
        self._sent_version = version
        self._shown_length = len(markdown)
        self._failures = 0
        self._waiting_since = None if version == self._version else self.last_write_done
        if self.final and version == self._version:
            self._settled.set()
        return None

    async def _record(self, text: str) -> None:
        if self._checkpoint is None:
            return
        try:
            await self._checkpoint(text)
        except Exception as error:  # the answer goes on regardless
            log.warning("could not checkpoint message %s (%s)", self.ts, error.__class__.__name__)

    def _failed_once(self, reason: str) -> None:
        """A network fault or Slack's own: try again after a backoff, for as long as it takes (an edit is the
        same whenever it is sent, and giving up would leave the message with its cursor)."""
        self._failures += 1
        if self._failures == 1 or self._failures % 10 == 0:
            log.warning("chat.update of %s failed (%s), attempt %d; trying again", self.ts, reason, self._failures)
        self.not_before = self._clock() + min(0.1 * 2**self._failures, MAX_BACKOFF)

    def _give_up(self, error: str) -> None:
        self.error = error
        if error in GONE_ERRORS:
            log.info("message %s in %s is gone (%s); stopping its answer", self.ts, self.channel, error)
            self.gone = True
            self._on_gone()
        else:
            log.error("chat.update of %s in %s failed for good: %s", self.ts, self.channel, error)
            self.failed = True
        self._lane.forget(self)
        self._settled.set()
