"""The owner of one workspace's `chat.update` budget.

Slack allows about 50 `chat.update` calls a minute per workspace, shared by every message being
edited. Writers only say "my message has newer text"; this scheduler decides which message is
edited next and when, so that the budget is never exceeded, each message is edited at most once
per interval, and a `Retry-After` pauses the whole workspace.

Pacing. A sliding window alone lets a burst of answers spend the whole minute's budget in a few
seconds and then stall every message of the workspace until those edits age out: the text written
during the stall waits up to a minute. So edits are paced by a token bucket instead: a small burst
(`burst`, about a tenth of the budget, so that new answers show their first words at once) and then
a steady `(limit - burst) / window` per second. A bucket never lets more than `burst + rate * window`
calls through in any window, which is exactly the limit: paced this way the edits never run into the
window and are as evenly spaced as the budget allows. The sliding window stays as the hard
limit (it counts completions, which Slack can only have seen earlier, so jitter cannot push it over).

Two kinds of edit don't wait for the pace, only for the window: a message's first text (the reader
sees the answer has started) and its final text (the answer is complete and exact). There is one of
each per answer, so they cannot run away with the budget; they still take their token, putting the
bucket in debt, so the edits in between slow down to pay for them and the long-run rate stays the
sustainable one. (With more answers starting or ending at once than the window holds, those few
wait for the window, as before.)

`SLACK_BUDGET_SHARE` processes sharing a workspace each get `limit / share` (services.py): each
process paces its own share, so their sum stays within Slack's limit without talking to each other.
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


class PacedBudget:
    """A token bucket: up to `burst` calls at once, then one every `1 / rate` seconds."""

    def __init__(self, *, burst: int, rate: float, clock: Callable[[], float]):
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def wait_time(self) -> float:
        """Seconds until one more call may start (0 when it may start now)."""
        now = self._clock()
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> None:
        """Spend a token; an urgent edit may spend one that is not there yet (the bucket goes into debt)."""
        self._refill(self._clock())
        self._tokens -= 1


def paced_budget(limit: int, window: float, clock: Callable[[], float]) -> PacedBudget:
    """The bucket whose burst plus a window's refill is exactly `limit` (see the module's docstring)."""
    burst = max(1, limit // 10)
    if limit <= burst:
        return PacedBudget(burst=limit, rate=limit / window, clock=clock)  # too small to pace: the window decides
    return PacedBudget(burst=burst, rate=(limit - burst) / window, clock=clock)


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
        self._pace = paced_budget(edits_per_minute, window, clock)
        self._waiting: set[Editable] = set()
        self._in_flight: set[Editable] = set()
        self._paused_until = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def request(self, writer: Editable) -> None:
        """`writer` has newer text than Slack shows. Called on every delta: cheap when already waiting."""
        if writer in self._in_flight or (writer in self._waiting and not writer.final):
            return  # its edit is already due; the edit reads the latest text when it is sent
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

    @staticmethod
    def _urgent(writer: Editable) -> bool:
        return writer.final or writer.last_edit_done is None

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
            # Final texts go first (an answer complete and exact), then first texts (see the module
            # docstring); among the rest, the message whose visible text is the most behind.
            key = (writer.final, writer.last_edit_done is None, writer.backlog(now))
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
                    pace = 0.0 if self._urgent(writer) else self._pace.wait_time()
                    if pace <= 0:
                        self._start(writer)
                        continue
                    delay = min(delay, pace)
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
        self._pace.take()
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
