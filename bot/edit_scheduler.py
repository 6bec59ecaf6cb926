"""The owner of one workspace's `chat.update` budget.

Slack allows about 50 `chat.update` calls a minute per workspace, shared by every message being
edited. Writers only say "my message has newer text"; this scheduler decides which message is
edited next and when, so that the budget is never exceeded, each message is edited at most once
per interval, and a `Retry-After` pauses the whole workspace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Editable(Protocol):
    """What the scheduler needs from a message writer."""

    final: bool
    last_edit_done: float | None
    not_before: float

    def wants_edit(self) -> bool: ...

    def backlog(self, now: float) -> float: ...

    async def edit(self) -> float | None:
        """Send the latest text. Returns a Retry-After in seconds when Slack rate-limited the call."""


class SlidingWindow:
    """At most `limit` events in any `window` seconds, counted at each call's completion.

    Counting completions (not starts) is conservative: Slack counts a call when it arrives, which is
    never later than when its answer gets back to us.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float]):
        self.limit = limit
        self.window = window
        self._clock = clock
        self._done: deque[float] = deque()
        self.in_flight = 0

    def _expire(self, now: float) -> None:
        while self._done and self._done[0] <= now - self.window:
            self._done.popleft()

    def wait_time(self) -> float:
        """Seconds until one more call fits (0 when it fits now)."""
        now = self._clock()
        self._expire(now)
        if len(self._done) + self.in_flight < self.limit:
            return 0.0
        if not self._done:
            return self.window  # only in-flight calls fill it; their completion wakes us
        return self._done[0] + self.window - now

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight -= 1
        self._done.append(self._clock())


class EditScheduler:
    def __init__(
        self,
        *,
        edits_per_minute: int,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        window: float = 60.0,
    ):
        self.interval = interval
        self._clock = clock
        self._budget = SlidingWindow(edits_per_minute, window, clock)
        self._waiting: set[Editable] = set()
        self._in_flight: set[Editable] = set()
        self._paused_until = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.rate_limited = 0

    def request(self, writer: Editable) -> None:
        """`writer` has newer text than Slack shows."""
        if writer not in self._in_flight:
            self._waiting.add(writer)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="edit-scheduler")

    def forget(self, writer: Editable) -> None:
        self._waiting.discard(writer)

    def _ready_at(self, writer: Editable) -> float:
        last = writer.last_edit_done
        ready = writer.not_before if last is None else max(writer.not_before, last + self.interval)
        return ready

    def _choose(self, now: float) -> tuple[Editable | None, float]:
        """The writer to edit now, or how long until one can be edited."""
        best, best_key, soonest = None, None, float("inf")
        for writer in list(self._waiting):
            if not writer.wants_edit():
                self._waiting.discard(writer)
                continue
            ready = self._ready_at(writer)
            if ready > now:
                soonest = min(soonest, ready - now)
                continue
            # Finishing an answer frees its reader and its credits; among the rest, the message
            # whose visible text is the most behind goes first.
            key = (writer.final, writer.backlog(now))
            if best_key is None or key > best_key:
                best, best_key = writer, key
        return best, soonest

    async def _run(self) -> None:
        while self._waiting:
            self._wake.clear()
            now = self._clock()
            delay = self._paused_until - now
            if delay <= 0:
                delay = self._budget.wait_time()
            if delay <= 0:
                writer, delay = self._choose(now)
                if writer is not None:
                    self._start(writer)
                    continue
            if delay == float("inf"):
                delay = None  # nothing ready by time: wait for a writer or an edit to finish
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    def _start(self, writer: Editable) -> None:
        self._waiting.discard(writer)
        self._in_flight.add(writer)
        self._budget.started()
        asyncio.get_running_loop().create_task(self._edit(writer), name="chat-update")

    async def _edit(self, writer: Editable) -> None:
        retry_after = None
        try:
            retry_after = await writer.edit()
        except Exception:
            log.exception("unexpected failure editing a message")
        finally:
            self._budget.finished()
            self._in_flight.discard(writer)
        if retry_after is not None:
            self.rate_limited += 1
            self._paused_until = max(self._paused_until, self._clock() + retry_after)
            log.warning("chat.update rate-limited; pausing edits for %.1fs", retry_after)
        if writer.wants_edit():
            self._waiting.add(writer)
        self._wake.set()
        if self._waiting and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="edit-scheduler")


class EditSchedulers:
    """One scheduler per workspace, created on first use."""

    def __init__(self, *, edits_per_minute: int, interval: float, clock: Callable[[], float] = time.monotonic):
        self._edits_per_minute = edits_per_minute
        self._interval = interval
        self._clock = clock
        self._by_team: dict[str, EditScheduler] = {}

    def for_team(self, team_id: str) -> EditScheduler:
        scheduler = self._by_team.get(team_id)
        if scheduler is None:
            scheduler = EditScheduler(
                edits_per_minute=self._edits_per_minute, interval=self._interval, clock=self._clock
            )
            self._by_team[team_id] = scheduler
        return scheduler
