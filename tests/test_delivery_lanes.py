"""The workspace budgets and their lanes, driven with stand-in writers and calls (the real ones are covered end to
end)."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

from bot.delivery.budgets import Budget, Limit, PacedBudget, SlidingWindow, paced_budget
from bot.delivery.call_lane import NORMAL, URGENT, CallLane
from bot.delivery.writer_lane import WriterLane


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_counts_calls_when_they_start_and_keeps_them_a_second_longer_than_slack():
    clock = FakeClock()
    window = SlidingWindow(limit=2, window=Limit(2).kept_window, clock=clock)
    assert window.wait_time() == 0
    window.add()
    clock.now += 10
    window.add()
    assert window.wait_time() == 51, "the first call leaves 61 s after it started: a second for its journey"
    clock.now += 51
    assert window.wait_time() == 0


def test_a_finished_call_counts_from_its_end_the_latest_moment_slack_can_have_counted_it():
    clock = FakeClock()
    window = SlidingWindow(limit=1, window=60.0, clock=clock)
    window.add()
    clock.now += 5  # the request waited on its way (a busy loop, no free connection) and was answered late
    window.finish()
    clock.now += 56
    assert window.wait_time() == 4, "Slack may have counted it only 5 s after it started"
    clock.now += 4
    assert window.wait_time() == 0


def lane(*, edits_per_minute: int, interval: float, window: float = 60.0) -> WriterLane:
    return WriterLane(Budget(Limit(edits_per_minute, window, margin=0.0)), interval=interval, method="chat.update")


class Writer:
    """Stands in for a MessageWriter: records when it was edited."""

    def __init__(self, scheduler: WriterLane, name: str, *, final_after: int = 10**9):
        self.scheduler = scheduler
        self.name = name
        self.final = False
        self.last_write_done = None
        self.not_before = 0.0
        self.version = 0
        self.sent = 0
        self.edits: list[float] = []
        self.in_edit = False
        self.overlaps = 0

    def touch(self) -> None:
        self.version += 1
        self.scheduler.request(self)

    def wants_write(self) -> bool:
        return self.version != self.sent

    def backlog(self, now: float) -> float:
        return self.version - self.sent

    async def write(self):
        self.overlaps += self.in_edit
        self.in_edit = True
        version = self.version
        await asyncio.sleep(0.002)
        self.edits.append(time.monotonic())
        self.last_write_done = time.monotonic()
        self.sent = version
        self.in_edit = False
        return None


async def test_many_writers_never_exceed_the_budget_and_each_keeps_its_interval():
    scheduler = lane(edits_per_minute=6, interval=0.05, window=0.5)
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
        gaps = [b - a for a, b in pairwise(writer.edits)]
        assert all(gap >= 0.05 - 0.005 for gap in gaps)
    assert all(writer.edits for writer in writers), "every message gets a turn"


async def test_a_final_edit_goes_before_streaming_edits():
    scheduler = lane(edits_per_minute=100, interval=0.0)
    streaming = Writer(scheduler, "streaming")
    finishing = Writer(scheduler, "finishing")
    finishing.final = True
    streaming.version = 50  # far more text waiting
    finishing.version = 1
    now = time.monotonic()
    scheduler._waiting.update({streaming, finishing})
    chosen, _ = scheduler._choose(now)
    assert chosen is finishing


def test_paced_budget_allows_a_small_burst_then_a_steady_rate():
    clock = FakeClock()
    budget = PacedBudget(burst=3, rate=0.5, clock=clock)
    for _ in range(3):
        assert budget.wait_time() == 0
        budget.take()
    assert budget.wait_time() == 2.0, "the burst is spent: one call every 1 / rate seconds"
    clock.now += 2.0
    assert budget.wait_time() == 0
    budget.take()
    clock.now += 1000
    assert budget.wait_time() == 0
    for _ in range(3):
        budget.take()
    assert budget.wait_time() > 0, "an idle budget refills only up to the burst"


def test_paced_budget_never_exceeds_the_limit_in_any_window_even_when_spent_greedily():
    clock = FakeClock()
    budget = paced_budget(50, 60.0, clock)
    assert (budget.burst, budget.rate) == (5, 45 / 60)
    taken = []
    while clock.now < 100 + 300:
        if budget.wait_time() == 0:
            budget.take()
            taken.append(clock.now)
        clock.now += 0.05
    for i, start in enumerate(taken):
        assert len([t for t in taken[i:] if t < start + 60]) <= 50
    steady = taken[5:]
    gaps = [b - a for a, b in pairwise(steady)]
    assert max(gaps) < 60 / 45 + 0.06, "after the burst, edits are evenly spaced: no stall"
    assert len(taken) >= 5 + 45 * 5 - 2, "and the whole sustainable budget is spent"


def test_a_tiny_budget_is_still_usable():
    clock = FakeClock()
    budget = paced_budget(1, 60.0, clock)
    assert budget.wait_time() == 0
    budget.take()
    assert budget.wait_time() == 60.0


async def test_workspace_edits_are_spread_evenly_instead_of_burst_then_stall():
    # 20 edits a "minute" of 1 s: a burst of 2, then one every 1/18 s, while five messages keep streaming
    # (their five first edits go at once and put the bucket in debt).
    scheduler = lane(edits_per_minute=20, interval=0.01, window=1.0)
    writers = [Writer(scheduler, f"w{i}") for i in range(5)]
    for _ in range(150):
        for writer in writers:
            writer.touch()
        await asyncio.sleep(0.01)
    every_edit = sorted(t for writer in writers for t in writer.edits)
    for i, start in enumerate(every_edit):
        assert len([t for t in every_edit[i:] if t < start + 1.0 - 0.01]) <= 20
    gaps = [b - a for a, b in pairwise(every_edit[5:])]
    assert max(gaps) < 0.3, f"no stall while messages wait (longest gap {max(gaps):.2f}s)"
    assert min(gaps) > 1 / 18 - 0.01, "and no bursts after the first texts"


async def test_a_delta_for_a_message_already_waiting_costs_no_wake_up():
    scheduler = lane(edits_per_minute=1, interval=100.0)
    writer = Writer(scheduler, "w")
    writer.touch()
    await asyncio.sleep(0.01)  # its first edit is sent; the budget is now spent
    writer.touch()
    await asyncio.sleep(0)
    scheduler._wake.clear()
    writer.touch()
    assert not scheduler._wake.is_set()
    scheduler._task.cancel()


async def test_first_and_final_texts_do_not_wait_for_the_pace_but_pay_for_it():
    scheduler = lane(edits_per_minute=20, interval=0.0, window=10.0)  # burst 2, then one per 0.55 s
    writers = [Writer(scheduler, f"w{i}") for i in range(4)]
    for writer in writers:
        writer.touch()
    await asyncio.sleep(0.05)
    assert all(len(writer.edits) == 1 for writer in writers), "four first texts at once, beyond the burst of 2"
    for writer in writers:
        writer.touch()
    await asyncio.sleep(0.05)
    assert sum(len(writer.edits) for writer in writers) == 4, "middle edits wait: the bucket is in debt"
    writers[0].final = True
    writers[0].touch()
    await asyncio.sleep(0.05)
    assert len(writers[0].edits) == 2, "a final text goes at once"
    scheduler._task.cancel()


async def test_calls_wait_their_turn_in_order_and_none_is_dropped():
    budget = Budget(Limit(calls=3, window=0.3, burst=1, margin=0.0))  # one now, then one every 0.15 s
    channel = CallLane(budget)
    started: list[tuple[str, float]] = []

    async def post(name: str, priority: int = NORMAL) -> None:
        async with channel.turn(priority):
            started.append((name, time.monotonic()))

    begin = time.monotonic()
    await asyncio.gather(*(post(f"p{i}") for i in range(6)))
    assert [name for name, _ in started] == [f"p{i}" for i in range(6)], "first come, first served"
    times = [at - begin for _, at in started]
    gaps = [b - a for a, b in pairwise(times)]
    assert min(gaps) >= 0.15 - 0.01, f"paced: {gaps}"
    assert channel.waiting == 0


async def test_an_urgent_call_goes_before_calls_that_arrived_earlier():
    channel = CallLane(Budget(Limit(calls=2, window=0.2, burst=1, margin=0.0)))
    order: list[str] = []

    async def post(name: str, priority: int) -> None:
        async with channel.turn(priority):
            order.append(name)

    first = asyncio.ensure_future(post("first", NORMAL))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(post(f"normal{i}", NORMAL)) for i in range(2)]
    await asyncio.sleep(0)
    urgent = asyncio.ensure_future(post("continuation", URGENT))
    await asyncio.gather(first, *waiting, urgent)
    assert order == ["first", "continuation", "normal0", "normal1"]


async def test_a_rate_limited_call_waits_out_retry_after_and_keeps_its_place():
    channel = CallLane(Budget(Limit(calls=100, window=1.0, burst=1, margin=0.0)))
    order: list[tuple[str, float]] = []
    begin = time.monotonic()
    refused: list[str] = []

    async def post(name: str) -> None:
        place = channel.place()
        while True:
            async with channel.turn(NORMAL, place=place) as turn:
                if name == "a" and not refused:
                    refused.append(name)
                    turn.rate_limited(0.2)  # Slack said 429, Retry-After 0.2 s
                    continue
                order.append((name, time.monotonic() - begin))
                return

    await asyncio.gather(post("a"), post("b"), post("c"))
    assert [name for name, _ in order] == ["a", "b", "c"], "the refused call goes again before later arrivals"
    assert all(at >= 0.2 - 0.01 for _, at in order), "nothing starts before Retry-After has passed"


async def test_a_cancelled_waiter_leaves_the_queue_and_gives_no_turn_away():
    channel = CallLane(Budget(Limit(calls=2, window=0.2, burst=1, margin=0.0)))
    async with channel.turn():
        pass
    waiter = asyncio.ensure_future(channel.turn().__aenter__())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert channel.waiting == 0
    begin = time.monotonic()
    async with channel.turn():
        assert time.monotonic() - begin < 0.2
