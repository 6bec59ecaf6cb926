"""Stopping an answer while it is written: Slack's own Stop (an agent session, native streams) or the Stop
button under a message of the edit path. Only the asker or a workspace admin may stop an answer.

Answers being written in this process are stopped at once (Claude's connection is closed, which stops the
generation). An answer another process writes is asked through its in-flight record, which its process
reads back at its next checkpoint (before its next edit or append, about a second later); a native stream
also learns it from Slack itself, whose appends then fail with `stopped_by_user`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.inflight import AnswerJournal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningAnswer:
    answer_id: str
    team_id: str
    channel_id: str
    thread_ts: str | None
    asker: str
    stop: Callable[[str], None]  # called with whoever stopped it


class AnswerStops:
    def __init__(self, journal: AnswerJournal):
        self._journal = journal
        self._running: dict[str, RunningAnswer] = {}

    def add(self, answer: RunningAnswer) -> None:
        self._running[answer.answer_id] = answer

    def discard(self, answer_id: str) -> None:
        self._running.pop(answer_id, None)

    async def asker_of(self, answer_id: str) -> str | None:
        """Who asked the question the answer answers; None once the answer is finished."""
        running = self._running.get(answer_id)
        if running is not None:
            return running.asker
        record = await self._journal.find(answer_id)
        return record.user_id if record is not None and not record.settled else None

    async def stop(self, answer_id: str, *, by: str) -> bool:
        """Stop one answer; False when it is not being written any more."""
        running = self._running.get(answer_id)
        if running is not None:
            running.stop(by)
            return True
        return await self._journal.request_stop(record_id=answer_id, by=by) > 0

    async def stop_thread(self, team_id: str, channel_id: str, thread_ts: str, *, by: str) -> int:
        """Stop the answers being written in a thread (Slack's Stop stops an agent session, which is a thread)."""
        here = [
            a
            for a in self._running.values()
            if (a.team_id, a.channel_id, a.thread_ts) == (team_id, channel_id, thread_ts)
        ]
        for answer in here:
            answer.stop(by)
        elsewhere = await self._journal.request_stop(thread=(team_id, channel_id, thread_ts), by=by)
        return len(here) + elsewhere
