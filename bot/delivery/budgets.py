"""Slack's rate limits, as budgets a scheduler can ask "may one more call start now?".

A `Budget` is what one Slack limit looks like from here: a method in a workspace (`chat.update`,
about 50 a minute) or in a channel (`chat.postMessage`, about one a second). It combines

* a sliding window, the hard limit: at most `limit` calls in any `window` seconds, counted at each
  call's completion (Slack counts a call when it arrives, never later than its answer gets back to
  us, so jitter cannot push the count over);
* a token bucket that spreads the calls out: a small burst, then a steady rate, such that
  `burst + rate * window == limit`. Paced this way calls never run into the window, so a burst of
  work cannot spend the whole minute in its first seconds and then stall everything for the rest;
* a pause: after a 429, nothing starts before Slack's `Retry-After` has passed.

Urgent calls (an answer's first and final text) skip the pace but not the window or a pause; they
still take their token, so the bucket goes into debt and the calls after them slow down to pay.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


class SlidingWindow:
    """At most `limit` events in any `window` seconds, counted at each call's completion."""

    def __init__(self, limit: int, window: float, clock: Clock):
        self.limit = limit
        self.window = window
        self._clock = clock
        self._done: deque[float] = deque()
        self.in_flight = 0

    def _expire(self, now: float) -> None:
        while self._done and self._done[0] <= now - self.window:
            self._done.popleft()

    def wait_time(self) -> float:
        """Seconds until one more call fits (0 when it fits now; infinite until a call in flight ends)."""
        now = self._clock()
        self._expire(now)
        if len(self._done) + self.in_flight < self.limit:
            return 0.0
        if not self._done:
            return math.inf  # only calls in flight fill it: their completion is what to wait for
        return self._done[0] + self.window - now

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight -= 1
        self._done.append(self._clock())

    def count(self) -> int:
        self._expire(self._clock())
        return len(self._done) + self.in_flight

    @property
    def idle(self) -> bool:
        self._expire(self._clock())
        return not self._done and not self.in_flight


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
    burst = max(1, limit // 10) if burst is None else max(1, min(burst, limit))
    if limit <= burst:
        return PacedBudget(burst=limit, rate=limit / window, clock=clock)  # too small to pace: the window decides
    return PacedBudget(burst=burst, rate=(limit - burst) / window, clock=clock)


@dataclass(frozen=True)
class Limit:
    """One of Slack's limits: `calls` per `window` seconds, with at most `burst` at once."""

    calls: int
    window: float = 60.0
    burst: int | None = None  # None: a tenth of `calls`

    @classmethod
    def per_minute(cls, calls: int, burst: int | None = None) -> Limit:
        return cls(max(1, calls), 60.0, burst)

    @classmethod
    def per_second(cls, rate: float, burst: int = 1) -> Limit:
        """`rate` calls a second after a burst: a window of ten seconds holds the burst and ten seconds' worth."""
        window = 10.0
        return cls(burst + max(1, round(rate * window)), window, burst)


class Budget:
    """One Slack limit: the window, the pace, and a pause after a 429."""

    def __init__(self, limit: Limit, clock: Clock = time.monotonic):
        self.limit = limit
        self._clock = clock
        self._window = SlidingWindow(limit.calls, limit.window, clock)
        self._pace = paced_budget(limit.calls, limit.window, clock, burst=limit.burst)
        self._paused_until = 0.0

    def wait_time(self, *, urgent: bool = False) -> float:
        """Seconds until a call may start (0: now)."""
        paused = self._paused_until - self._clock()
        if paused > 0:
            return paused
        wait = self._window.wait_time()
        if wait > 0 or urgent:
            return wait
        return self._pace.wait_time()

    def started(self) -> None:
        self._window.started()
        self._pace.take()

    def finished(self, retry_after: float | None = None) -> None:
        self._window.finished()
        if retry_after is not None:
            self.pause(retry_after)

    @property
    def used(self) -> int:
        """Calls counted in the window now (in flight included)."""
        return self._window.count()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def idle(self) -> bool:
        """Nothing in flight, nothing counted, no pause: forgetting this budget loses nothing."""
        return self._window.idle and self._paused_until <= self._clock()
