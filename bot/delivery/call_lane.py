"""One-off Slack calls waiting their turn under one budget, in order of priority, then of arrival.

A post is not an edit: it cannot be skipped or merged with a later one, so every call waits in a
queue until the budget lets it start. Nothing here gives up: a caller waits for as long as the
budget (or a 429's Retry-After) says, and a cancelled caller simply leaves the queue. One task per
lane hands the turns out, and only while someone waits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.delivery.budgets import SlackBudget

# Lower goes first.
URGENT = 0  # the rest of an answer already being written (a continuation message, a stream's stop)
NORMAL = 1  # a new reply: placeholder, notice, DM


class Turn:
    """A granted turn; `rate_limited` marks the call as refused by Slack (the lane pauses, the caller retries)."""

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def rate_limited(self, retry_after: float) -> None:
        self.retry_after = retry_after


class CallLane:
    def __init__(self, budget: SlackBudget):
        self.budget = budget
        self._queue: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()
        self._arrived = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._queue if not future.done())

    @property
    def idle(self) -> bool:
        return not self.waiting and self.budget.idle

    def place(self) -> int:
        """A place in the queue for a caller that will come back (after a 429) ahead of later arrivals."""
        return next(self._order)

    @asynccontextmanager
    async def turn(self, priority: int = NORMAL, *, place: int | None = None) -> AsyncIterator[Turn]:
        """Wait until the budget lets this call start; the call runs inside the block."""
        place = next(self._order) if place is None else place
        if not await self._taken_at_once(priority):
            future = asyncio.get_running_loop().create_future()
            heapq.heappush(self._queue, (priority, place, future))
            self._arrived.set()
            if self._dispatcher is None or self._dispatcher.done():
                self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name="slack-call-lane")
            await future  # a cancelled caller leaves its (cancelled) future behind: the dispatcher skips it
        turn = Turn()
        try:
            yield turn
        finally:
            await self.budget.finished()
            if turn.retry_after is not None:
                await self.budget.pause(turn.retry_after)
                self._arrived.set()

    async def _taken_at_once(self, priority: int) -> bool:
        """With nobody waiting, a call the budget allows starts without the dispatcher's round trip (under a
        burst every hop through the event loop waits behind everything else that is ready)."""
        if self._queue or (self._dispatcher is not None and not self._dispatcher.done()):
            return False
        return await self.budget.take(urgent=priority == URGENT) <= 0

    async def close(self) -> None:
        """Stop handing out turns (shutdown): callers still queued are cancelled, as their answers are."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        for _, _, future in self._queue:
            future.cancel()
        self._queue.clear()

    async def _dispatch(self) -> None:
        while True:
            while self._queue and self._queue[0][2].done():
                heapq.heappop(self._queue)
            if not self._queue:
                return
            priority = self._queue[0][0]
            self._arrived.clear()
            wait = await self.budget.take(urgent=priority == URGENT)
            if wait <= 0:
                # The turn goes to whoever is first now (a more urgent caller may have come meanwhile); taken
                # for nobody (everyone left), it is simply not used.
                while self._queue:
                    _, _, future = heapq.heappop(self._queue)
                    if not future.done():
                        future.set_result(None)
                        break
                continue
            try:  # a more urgent arrival, or a pause, may change what to wait for
                await asyncio.wait_for(self._arrived.wait(), timeout=wait)
            except TimeoutError:
                pass
