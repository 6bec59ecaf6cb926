"""Long-lived state stays bounded: a workspace's scheduler goes once it is idle, and nothing the bot started
is left running after it stops, even when it stops mid-answer."""

from __future__ import annotations

import asyncio

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery import DeliveryLimits, SlackSchedulers
from tests.fakes.anthropic import Script
from tests.fakes.slack import FakeSlack
from tests.harness import start_harness, stop_harness

LONG = " ".join(f"word{i}" for i in range(3000))


async def test_an_idle_workspace_scheduler_is_dropped_and_a_busy_or_recent_one_kept():
    now = [1000.0]
    schedulers = SlackSchedulers(DeliveryLimits(), lambda: now[0], forget_after=600)
    async with FakeSlack() as slack, aiohttp.ClientSession() as http:
        for team in ("T1", "T2"):
            slack.add_workspace(team, f"xoxb-{team}")
            client = AsyncWebClient(token=f"xoxb-{team}", base_url=slack.api_url, session=http)
            await schedulers.for_team(team).call(client, "chat.postMessage", channel="C1", text="hello")
        assert len(schedulers) == 2
        now[0] += 30
        schedulers.prune()
        assert len(schedulers) == 2  # asked for within the last 10 minutes, and its calls still in their window
        now[0] += 300
        recent = schedulers.for_team("T2")
        now[0] += 301
        schedulers.prune()
        assert len(schedulers) == 1 and schedulers.for_team("T2") is recent
        now[0] += 601
        schedulers.prune()
        assert len(schedulers) == 0
        await schedulers.close()


def bot_tasks() -> list[asyncio.Task]:
    """Tasks running code of the bot's packages (the fakes' and the test's own are not counted)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if (
            task is not asyncio.current_task()
            and not task.done()
            and code
            and "/tests/" not in code.co_filename
            and any(
                f"/{package}/" in code.co_filename
                for package in ("bot", "billing", "storage", "slack_sdk", "slack_bolt")
            )
        ):
            found.append(task)
    return found


async def test_stopping_mid_answer_leaves_no_task_of_the_bot_running(sqlite_url):
    h = await start_harness(sqlite_url, slack_streaming="edit", slack_update_interval=0.1)
    try:
        h.claude.enqueue(Script(text=LONG, delta_chars=10, delay=0.02))
        await h.mention("go on and on")
        await h.claude.wait_for_requests(1)
        while len(h.slack.calls_to("chat.update")) < 3:
            await asyncio.sleep(0.05)
        assert bot_tasks()  # the answer, its writers and the scheduler's lanes are running
    finally:
        await stop_harness(h)
    await asyncio.sleep(0)
    assert bot_tasks() == []


async def test_claude_streams_beyond_claude_max_streams_wait_their_turn_and_all_finish(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(claude_max_streams=1, slack_streaming="edit")
    for word in ("one", "two"):
        h.claude.enqueue(Script(text=f"answer {word} " * 20, delta_chars=10, delay=0.02))
    first = await h.mention("first?")
    second = await h.mention("second?", channel="C0002")
    await h.claude.wait_for_requests(1)
    await asyncio.sleep(0.3)
    assert len(h.claude.requests) == 1 and h.claude.open_streams == 1  # the second waits for the first
    assert "Thinking" in h.reply_text("C0002", second.ts)  # ... with its placeholder already shown
    await h.idle()
    assert len(h.claude.requests) == 2
    assert h.reply_text("C0001", first.ts).startswith("answer one") and h.reply_text("C0002", second.ts).startswith(
        "answer two"
    )
