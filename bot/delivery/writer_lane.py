"""Messages that grow, sharing one budget: which message is written next, and when.

`chat.update` is about 50 calls a minute per workspace, shared by every message being edited.
Writers only say "my message has newer text"; the lane decides which message is written next and
when, so that the budget is never exceeded, each message is written at most once per interval,
and a `Retry-After` pauses the whole workspace. Between two writes a writer only remembers that
newer text exists, so a burst of deltas costs nothing and the next write carries the latest text:
intermediate states are skipped, never queued.

The pace is the budget's (see budgets.py). Two kinds of write don't wait for the pace, only for the
window: a message's first text (the reader sees the answer has started) and its final text (the
answer is complete and exact). There is one of each per answer, so they cannot run away with the
budget; they still take their token, so the writes in between slow down to pay for them.

The turn goes to a final text, then a first text, then the message whose waiting text × waiting time
is largest; a delta for a message that already waits for its turn costs a set lookup.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from bot.delivery.budgets import SlackBudget

log = logging.getLogger(__name__)


class Writable(Protocol):
    """What the lane needs from a message writer."""

    final: bool
    last_write_done: float | None
    not_before: float

    def wants_write(self) -> bool: ...

    def backlog(self, now: float) -> float: ...

    async def write(self) -> float | None:
        """Send the latest text. Returns a Retry-After in seconds when Slack rate-limited the call."""


class WriterLane:
    def __init__(
        self,
        budget: SlackBudget,
        *,
        interval: float | Callable[[], float],
        method: str,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.budget = budget
        self._interval = interval
        self.method = method
        self._clock = clock
        self._waiting: set[Writable] = set()
        self._in_flight: set[Writable] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()
        self._closed = False
        # Every writer alive on this lane, so that the lane (and its budget) outlives the messages it serves.
        self._writers: weakref.WeakSet[Writable] = weakref.WeakSet()

    def adopt(self, writer: Writable) -> None:
        self._writers.add(writer)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._waiting and not self._in_flight and not self._writers and self.budget.idle

    def request(self, writer: Writable) -> None:
        """`writer` has newer text than Slack shows. Called on every delta: cheap when already waiting."""
        if writer in self._in_flight or (writer in self._waiting and not writer.final):
            return  # its write is already due; the write reads the latest text when it is sent
        self._waiting.add(writer)
        self._wake.set()
        self._ensure_running()

    def forget(self, writer: Writable) -> None:
        self._waiting.discard(writer)

    def _ensure_running(self) -> None:
        if self._waiting and not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.method}-lane")

    @property
    def interval(self) -> float:
        """Seconds between two writes of one message (fixed, or a function of how many share the lane)."""
        return self._interval() if callable(self._interval) else self._interval

    def _ready_at(self, writer: Writable) -> float:
        last = writer.last_write_done
        return writer.not_before if last is None else max(writer.not_before, last + self.interval)

    @staticmethod
    def _urgent(writer: Writable) -> bool:
        return writer.final or writer.last_write_done is None

    def _choose(self, now: float) -> tuple[Writable | None, float]:
        """The writer to serve now, or how long until one can be served."""
        best, best_key, soonest = None, None, math.inf
        for writer in list(self._waiting):
            if not writer.wants_write():
                self._waiting.discard(writer)
                continue
            ready = self._ready_at(writer)
            if ready > now:
                soonest = min(soonest, ready - now)
                continue
            key = (writer.final, writer.last_write_done is None, writer.backlog(now))
            if best_key is None or key > best_key:
                best, best_key = writer, key
        return best, soonest

    async def _run(self) -> None:
        while self._waiting:
            self._wake.clear()
            now = self._clock()
            writer, delay = self._choose(now)
            if writer is not None:
                wait = await self.budget.take(urgent=self._urgent(writer))
                if wait <= 0:
                    if writer.wants_write():
                        self._start(writer)
                    else:  # nothing left to write meanwhile: the call is not made
                        await self.budget.finished()
                    continue
                delay = min(delay, wait)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=None if delay == math.inf else delay)
            except TimeoutError:
                pass

    def _start(self, writer: Writable) -> None:
        self._waiting.discard(writer)
        self._in_flight.add(writer)
        task = asyncio.get_running_loop().create_task(self._write(writer), name=self.method)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, writer: Writable) -> None:
        retry_after = None
        try:
            retry_after = await writer.write()
        except Exception:
            log.exception("unexpected failure writing a message (%s)", self.method)
        finally:
            self._in_flight.discard(writer)
        await self.budget.finished()
        if retry_after is not None:
            log.warning("%s rate-limited; pausing for %.1fs", self.method, retry_after)
            await self.budget.pause(retry_after)
        if writer.wants_write():
            self._waiting.add(writer)
        self._wake.set()
        self._ensure_running()

    async def close(self) -> None:
        """Stop the lane's loop and wait for the writes in flight (shutdown)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        await asyncio.gather(*self._writes, *(t for t in [self._task] if t), return_exceptions=True)
