"""The workspace budget owner, driven with stand-in writers (the real writers are covered end to end)."""

from __future__ import annotations

import asyncio
import time

from bot.edit_scheduler import EditScheduler, SlidingWindow


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_counts_completed_and_in_flight_calls():
    clock = FakeClock()
    window = SlidingWindow(limit=2, window=60, clock=clock)
    assert window.wait_time() == 0
    window.started()
    window.started()
    assert window.wait_time() == 60, "both slots taken by calls still in flight"
    window.finished()
    clock.now += 10
    window.finished()
    assert window.wait_time() == 50, "the first call leaves the window 60 s after it completed"
    clock.now += 50
    assert window.wait_time() == 0


class Writer:
    """Stands in for a MessageWriter: records when it was edited."""

    def __init__(self, scheduler: EditScheduler, name: str, *, final_after: int = 10**9):
        self.scheduler = scheduler
        self.name = name
        self.final = False
        self.last_edit_done = None
        self.not_before = 0.0
        self.version = 0
        self.sent = 0
        self.edits: list[float] = []
        self.in_edit = False
        self.overlaps = 0

    def touch(self) -> None:
        self.version += 1
        self.scheduler.request(self)

    def wants_edit(self) -> bool:
        return self.version != self.sent

    def backlog(self, now: float) -> float:
        return self.version - self.sent

    async def edit(self):
        self.overlaps += self.in_edit
        self.in_edit = True
        version = self.version
        await asyncio.sleep(0.002)
        self.edits.append(time.monotonic())
        self.last_edit_done = time.monotonic()
        self.sent = version
        self.in_edit = False
        return None


async def test_many_writers_never_exceed_the_budget_and_each_keeps_its_interval():
    scheduler = EditScheduler(edits_per_minute=6, interval=0.05, window=0.5)
    writers = [Writer(scheduler, f"w{i}") for i in range(5)]
    for _ in range(40):
        for writer in writers:
            writer.touch()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.6)
    every_edit = sorted(t for writer in writers for t in writer.edits)
    for i, start in enumerate(every_edit):
        in_window = [t for t in every_edit[i:] if t < start + 0.5 - 0.01]
        assert len(in_window) <= 6, "more edits in one window than the budget"
    for writer in writers:
        assert writer.overlaps == 0, "edits of one message must never run concurrently"
        gaps = [b - a for a, b in zip(writer.edits, writer.edits[1:])]
        assert all(gap >= 0.05 - 0.005 for gap in gaps)
    assert all(writer.edits for writer in writers), "every message gets a turn"


async def test_a_final_edit_goes_before_streaming_edits():
    scheduler = EditScheduler(edits_per_minute=100, interval=0.0)
    streaming = Writer(scheduler, "streaming")
    finishing = Writer(scheduler, "finishing")
    finishing.final = True
    streaming.version = 50  # far more text waiting
    finishing.version = 1
    now = time.monotonic()
    chosen, _ = scheduler._choose(now) if False else (None, None)
    scheduler._waiting.update({streaming, finishing})
    chosen, _ = scheduler._choose(now)
    assert chosen is finishing
