"""What the benchmark measures, computed from the fakes' own records.

Visible lag: FakeAnthropic noted when each delta left it (time, characters emitted so far) and
FakeSlack noted every state of every message (time, text). A delta is visible from the first
message state that shows Claude's text at least up to its end; its lag is the time in between.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.delivery.markdown import CURSOR


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def shown_prefix(expected: str, shown: str) -> int:
    """How many characters of Claude's text a message state shows (cursor and closing fence aside)."""
    shown = shown.split(CURSOR, 1)[0]
    if expected.startswith(shown):
        return len(shown)
    low, high = 0, min(len(shown), len(expected))  # binary search on startswith, done in C
    while low < high:
        middle = (low + high + 1) // 2
        if expected.startswith(shown[:middle]):
            low = middle
        else:
            high = middle - 1
    return low


@dataclass
class AnswerTrace:
    """One answer as the fakes saw it."""

    answer_id: str
    expected: str
    emitted: list[tuple[float, int]] = field(default_factory=list)  # (time, characters so far)
    shown: list[tuple[float, int]] = field(default_factory=list)  # (time, characters of Claude's text shown)
    final_text: str = ""


def visible_lags(trace: AnswerTrace, *, give_up_at: float) -> tuple[list[float], int]:
    """The lag of every delta, and how many never became visible (counted as waiting until `give_up_at`)."""
    lags, unseen = [], 0
    shown = sorted(trace.shown)
    best, j = 0, 0
    for emitted_at, length in trace.emitted:
        while best < length and j < len(shown):
            best = max(best, shown[j][1])
            j += 1
        if best >= length:
            # The fake notes a delta just after writing it, so a very fast edit can precede the note.
            lags.append(max(0.0, shown[j - 1][0] - emitted_at))
        else:
            lags.append(give_up_at - emitted_at)
            unseen += 1
    return lags, unseen


def first_text_delay(trace: AnswerTrace) -> float | None:
    first_token = trace.emitted[0][0] if trace.emitted else None
    first_shown = next((at for at, length in sorted(trace.shown) if length > 0), None)
    if first_token is None or first_shown is None:
        return None
    return max(0.0, first_shown - first_token)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LoopProbe:
    """Sleeps 10 ms over and over and records how late it wakes; samples RSS on the way."""

    PERIOD = 0.01

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.peak_rss = rss_bytes()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-probe")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        while True:
            started = loop.time()
            await asyncio.sleep(self.PERIOD)
            self.lags.append(loop.time() - started - self.PERIOD)
            n += 1
            if n % 10 == 0:
                self.peak_rss = max(self.peak_rss, rss_bytes())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.peak_rss = max(self.peak_rss, rss_bytes())


class CpuClock:
    def __init__(self) -> None:
        self.started = time.process_time()

    def seconds(self) -> float:
        return time.process_time() - self.started
