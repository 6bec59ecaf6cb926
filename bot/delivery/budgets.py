"""Slack's rate limits, as budgets a lane asks "may one more call start now?".

A `Budget` is what one Slack limit looks like from here: a method in a workspace (`chat.update`,
about 50 a minute) or in a channel (`chat.postMessage`, about one a second). It combines

* a sliding window, the hard limit: at most `limit` calls in any `window` seconds. A call is counted
  from when it starts until it ends, then from its end (the latest moment Slack can have counted it),
  and the window is kept a second longer than Slack's (`MARGIN`) for the journey of its answer;
* a token bucket that spreads the calls out: a burst, then a steady rate, such that
  `burst + rate * window == limit`. Paced this way calls never run into the window, so a burst of
  work cannot spend the whole minute in its first seconds and then stall everything for the rest;
* a pause: after a 429, nothing starts before Slack's `Retry-After` has passed.

Urgent calls (an answer's first and final text) skip the pace but not the window or a pause; they
still take their token, so the bucket goes into debt and the calls after them slow down to pay.

`take()` both decides and counts, in one step: that is what lets a `SharedBudget` (shared_budget.py)
keep the same budget for every process in Redis, atomically.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]
MARGIN = 1.0  # seconds added to every window (see the module docstring)


@dataclass(frozen=True)
class Limit:
    """One of Slack's limits: `calls` per `window` seconds, with at most `burst` at once."""

    calls: int
    window: float = 60.0
    burst: int | None = None  # None: a tenth of `calls`
    margin: float = MARGIN  # kept on top of the window (see the module docstring)

    @property
    def kept_window(self) -> float:
        return self.window + self.margin

    @classmethod
    def per_minute(cls, calls: int, burst: int | None = None) -> Limit:
        return cls(max(1, calls), 60.0, burst)

    @classmethod
    def per_second(cls, rate: float, burst: int = 1) -> Limit:
        """`rate` calls a second after a burst: a window of ten seconds holds the burst and ten seconds' worth."""
        window = 10.0
        return cls(burst + max(1, round(rate * window)), window, burst)

    @property
    def bucket_burst(self) -> int:
        burst = max(1, self.calls // 10) if self.burst is None else max(1, min(self.burst, self.calls))
        return min(burst, self.calls)

    @property
    def bucket_rate(self) -> float:
        """Calls a second after the burst: what keeps `burst + rate * window` at the limit (the window as kept,
        margin included, so that paced calls never run into it)."""
        spare = self.calls - self.bucket_burst
        return (spare if spare > 0 else self.calls) / self.kept_window

    def share(self, parts: int) -> Limit:
        """This limit divided among `parts` processes that cannot talk to each other."""
        if parts <= 1:
            return self
        calls = max(1, self.calls // parts)
        return Limit(calls, self.window, None if self.burst is None else max(1, self.burst // parts), self.margin)


class SlackBudget(Protocol):
    limit: Limit

    async def take(self, *, urgent: bool = False) -> float:
        """Count one more call and return 0 when it may start now; else return how many seconds to wait
        (and count nothing)."""

    async def finished(self) -> None:
        """A call taken earlier has ended (answered, failed or not made at all)."""

    async def pause(self, seconds: float) -> None:
        """Slack said 429: nothing starts for `seconds`."""

    def used(self) -> int:
        """About how many calls the window holds now (for decisions that need not be exact)."""

    def wait_time(self, *, urgent: bool = False) -> float:
        """About how long until a call could start (without taking it)."""

    @property
    def idle(self) -> bool:
        """Forgetting this budget now loses nothing."""


class SlidingWindow:
    """At most `limit` calls in any `window` seconds. A call counts from its start; once it has finished it
    counts from its end instead, the latest moment Slack can have counted it (a request that waited on its
    way, for a connection or in a busy loop, reaches Slack late and leaves Slack's window late). Calls are
    interchangeable here: a finished call moves the oldest start still counted to its end."""

    def __init__(self, limit: int, window: float, clock: Clock):
        self.limit = limit
        self.window = window
        self._clock = clock
        self._started: deque[float] = deque()  # calls not finished yet, by start
        self._finished: deque[float] = deque()  # by end

    def _expire(self, now: float) -> None:
        for times in (self._started, self._finished):
            while times and times[0] <= now - self.window:
                times.popleft()

    def wait_time(self) -> float:
        """Seconds until one more call fits (0 when it fits now)."""
        now = self._clock()
        self._expire(now)
        if len(self._started) + len(self._finished) < self.limit:
            return 0.0
        oldest = min(times[0] for times in (self._started, self._finished) if times)
        return oldest + self.window - now

    def add(self) -> None:
        self._started.append(self._clock())

    def finish(self) -> None:
        if self._started:
            self._started.popleft()
            self._finished.append(self._clock())

    def count(self) -> int:
        self._expire(self._clock())
        return len(self._started) + len(self._finished)


class PacedBudget:
    """A token bucket: up to `burst` calls at once, then one every `1 / rate` seconds."""

    def __init__(self, *, burst: int, rate: float, clock: Clock):
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
        self._refill(self._clock())
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self) -> None:
        """Spend a token; an urgent call may spend one that is not there yet (the bucket goes into debt)."""
        self._refill(self._clock())
        self._tokens -= 1


def paced_budget(limit: int, window: float, clock: Clock, *, burst: int | None = None) -> PacedBudget:
    """The bucket whose burst plus a window's refill is exactly `limit` (see the module's docstring)."""
    shape = Limit(limit, window, burst, margin=0.0)
    return PacedBudget(burst=shape.bucket_burst, rate=shape.bucket_rate, clock=clock)


class Budget:
    """One Slack limit, kept in this process: the window, the pace, and a pause after a 429."""

    def __init__(self, limit: Limit, clock: Clock = time.monotonic):
        self.limit = limit
        self._clock = clock
        self._window = SlidingWindow(limit.calls, limit.kept_window, clock)
        self._pace = PacedBudget(burst=limit.bucket_burst, rate=limit.bucket_rate, clock=clock)
        self._paused_until = 0.0

    def wait_time(self, *, urgent: bool = False) -> float:
        paused = self._paused_until - self._clock()
        if paused > 0:
            return paused
        wait = self._window.wait_time()
        if wait > 0 or urgent:
            return wait
        return self._pace.wait_time()

    def take_now(self, *, urgent: bool = False) -> float:
        wait = self.wait_time(urgent=urgent)
        if wait <= 0:
            self.record()
        return wait

    def record(self) -> None:
        """Count a call that was allowed elsewhere (by the shared budget), so that a fallback knows of it."""
        self._window.add()
        self._pace.take()

    def finished_now(self) -> None:
        self._window.finish()

    async def finished(self) -> None:
        self.finished_now()

    async def take(self, *, urgent: bool = False) -> float:
        return self.take_now(urgent=urgent)

    def pause_now(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def pause(self, seconds: float) -> None:
        self.pause_now(seconds)

    def used(self) -> int:
        return self._window.count()

    @property
    def idle(self) -> bool:
        return not self._window.count() and self._paused_until <= self._clock()
