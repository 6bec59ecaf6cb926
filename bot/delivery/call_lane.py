"""One-off Slack calls waiting their turn under one budget, in order of priority, then of arrival.

A post is not an edit: it cannot be skipped or merged with a later one, so every call waits in a
queue until the budget lets it start. Nothing here gives up: a caller waits for as long as the
budget (or a 429's Retry-After) says, and a cancelled caller simply leaves the queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

from bot.delivery.budgets import Budget

# Lower goes first.
URGENT = 0  # the rest of an answer already being written (a continuation message)
NORMAL = 1  # a new reply: placeholder, notice, DM


class Turn:
    """A granted turn; `rate_limited` marks the call as refused by Slack (the lane pauses and retries it)."""

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def rate_limited(self, retry_after: float) -> None:
        self.retry_after = retry_after


class CallLane:
    def __init__(self, budget: Budget):
        self.budget = budget
        self._queue: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._queue if not future.done())

    @property
    def idle(self) -> bool:
        return not self.waiting and self.budget.idle

    @asynccontextmanager
    async def turn(self, priority: int = NORMAL, *, place: int | None = None) -> AsyncIterator[Turn]:
        """Wait until the budget lets this call start; the call runs inside the block."""
        place = next(self._order) if place is None else place
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, place, future))
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.budget.finished()  # granted just as the caller was cancelled: give the turn back
                self._dispatch()
            raise
        turn = Turn()
        try:
            yield turn
        finally:
            self.budget.finished(turn.retry_after)
            self._dispatch()

    def place(self) -> int:
        """A place in the queue for a caller that will come back (after a 429) ahead of later arrivals."""
        return next(self._order)

    def _dispatch(self) -> None:
        """Start as many waiting calls as the budget allows now; come back when the next one may start."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            priority, _, future = self._queue[0]
            if future.done():
                heapq.heappop(self._queue)
                continue
            wait = self.budget.wait_time(urgent=priority == URGENT)
            if wait > 0:
                if wait != math.inf:  # infinite: calls in flight fill the window, and their end dispatches again
                    self._timer = asyncio.get_running_loop().call_later(wait, self._dispatch)
                return
            heapq.heappop(self._queue)
            self.budget.started()
            future.set_result(None)
