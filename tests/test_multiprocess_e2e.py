"""Two bot processes (`python -m bot`) on one database and one Redis, against one Slack: together they keep
each workspace within Slack's limits, as one process would, and they do not wait for a Redis that is gone.

The load is the benchmark's (bench/world.py): each answer's text is known in advance and streamed by the
Anthropic fake at a reader's pace, and the Slack fake keeps every state of every message, so the lag of
each piece of text (from leaving Claude to being visible in Slack) is measured, not guessed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import aiohttp

from bench.measure import AnswerTrace, mean, shown_prefix, visible_lags
from bench.world import TimedAnthropic, answer_text, question_for, script_for
from tests.fakes.slack import FakeSlack
from tests.harness import BOT_TOKEN, BOT_USER, SIGNING_SECRET, TEAM, BotHarness
from tests.process import BotProcess

ANSWERS = 16
WORDS = 240  # six seconds of text at 40 words a second
WINDOW = 60.0


class Phase:
    """One run of the load: fresh fakes (Slack's minute windows start empty), N bot processes."""

    def __init__(self, tag: str, database_url: str, tmp_path, *, redis_url: str | None):
        self.tag = tag
        self.slack = FakeSlack()
        self.claude = TimedAnthropic()
        self.environment = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "ANTHROPIC_API_KEY": "test-anthropic-key",
            "DATABASE_URL": database_url,
            "SLACK_STREAMING": "auto",
            "FREE_CREDITS": "100000000",
            "AI_CREDITS_PER_MESSAGE": "1",
            "CLAUDE_MAX_TOKENS": "2000",
            "LOG_LEVEL": "INFO",
        }
        if redis_url:
            self.environment["REDIS_URL"] = redis_url
        self.tmp_path = tmp_path
        self.processes: list[BotProcess] = []
        self.http: aiohttp.ClientSession | None = None
        self.ids = [f"{tag}{k}" for k in range(ANSWERS)]

    async def __aenter__(self) -> Phase:
        await self.slack.start()
        await self.claude.start()
        self.slack.add_workspace(TEAM, BOT_TOKEN, bot_user_id=BOT_USER)
        self.environment.update(SLACK_API_URL=self.slack.api_url, ANTHROPIC_BASE_URL=self.claude.base_url)
        for answer_id in self.ids:
            text = answer_text(answer_id, WORDS)
            self.claude.plan(answer_id, script_for(text, words_per_second=40, delta_chars=12))
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        # Stopped off the event loop: the fakes, on this loop, must go on answering a bot that finishes its work.
        await asyncio.gather(*(asyncio.to_thread(process.stop) for process in self.processes))
        await self.http.close()
        await self.claude.stop()
        await self.slack.stop()

    async def start_processes(self, count: int) -> list[BotHarness]:
        for n in range(count):
            process = BotProcess(self.environment, workdir=self.tmp_path, name=f"{self.tag}-bot{n}")
            self.processes.append(process)
        await asyncio.gather(*(process.start() for process in self.processes))
        return [BotHarness(self.slack, self.claude, None, None, self.http, port=p.port) for p in self.processes]

    async def ask_all(self, bots: list[BotHarness], *, over: float = 1.0) -> None:
        """Every question once, spread over `over` seconds and taken in turn by each process."""

        async def ask(k: int, answer_id: str) -> None:
            await asyncio.sleep(k * over / len(self.ids))
            sent = await bots[k % len(bots)].mention(question_for(answer_id), channel=f"C{answer_id}")
            assert sent.status == 200

        await asyncio.gather(*(ask(k, answer_id) for k, answer_id in enumerate(self.ids)))

    def final_text(self, answer_id: str) -> str:
        messages = [m for m in self.slack.channel_messages(f"C{answer_id}") if not m.deleted]
        return "\n".join(self.slack.visible_markdown(m) for m in messages)

    async def wait_until_answered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                all(self.final_text(a) == self.claude.scripts[a].text for a in self.ids)
                and not self.slack_streams_open()
            ):
                return
            await asyncio.sleep(0.2)

    def slack_streams_open(self) -> bool:
        return any(m.streaming for m in self.slack.messages.values())

    def traces(self) -> list[AnswerTrace]:
        traces = []
        for answer_id in self.ids:
            expected = self.claude.scripts[answer_id].text
            received = self.claude.by_marker.get(answer_id)
            trace = AnswerTrace(answer_id, expected, emitted=list(getattr(received, "emitted", [])))
            for message in self.slack.channel_messages(f"C{answer_id}"):
                for at, text, blocks in message.states:
                    markdown = "".join(b.get("text", "") for b in blocks or [] if b.get("type") == "markdown") or text
                    trace.shown.append((at, shown_prefix(expected, markdown)))
            trace.final_text = self.final_text(answer_id)
            traces.append(trace)
        return traces

    def mean_lag(self) -> float:
        lags = []
        for trace in self.traces():
            trace_lags, unseen = visible_lags(trace, give_up_at=time.monotonic())
            assert unseen == 0, f"{trace.answer_id}: text never shown"
            lags.extend(trace_lags)
        return mean(lags)

    def inexact(self) -> list[str]:
        return [a for a in self.ids if self.final_text(a) != self.claude.scripts[a].text]

    def limits_kept(self) -> None:
        """Zero 429s, and no 60-s window of the workspace over the fake's limit for any method."""
        refused = [c for c in self.slack.calls if c.status == 429]
        assert refused == [], f"{len(refused)} calls refused with 429: {sorted({c.method for c in refused})}"
        limits = {
            "chat.update": self.slack.update_limit_per_minute,
            "chat.startStream": self.slack.stream_starts_per_minute,
            "chat.appendStream": self.slack.stream_appends_per_minute,
            "chat.stopStream": self.slack.stream_stops_per_minute,
            "agents.sessions.setStatus": self.slack.sessions_per_minute,
        }
        times: dict[str, list[float]] = defaultdict(list)
        for call in self.slack.calls:
            if call.team_id == TEAM and call.status == 200:
                key = call.method
                if call.method == "assistant.threads.setStatus":
                    key = f"{call.method}:{call.params.get('channel_id')}"
                times[key].append(call.at)
        for key, starts in times.items():
            limit = limits.get(key) or (
                self.slack.status_per_minute if key.startswith("assistant.threads.setStatus") else None
            )
            if limit is None:
                continue
            starts.sort()
            busiest = max(sum(1 for t in starts[i:] if t < start + WINDOW) for i, start in enumerate(starts))
            assert busiest <= limit, f"{key}: {busiest} calls in one minute, over Slack's {limit}"

    async def health(self, process: BotProcess) -> dict:
        async with self.http.get(f"http://127.0.0.1:{process.port}/healthz") as response:
            assert response.status == 200
            return json.loads(await response.text())


async def test_two_processes_share_the_budget_through_redis_as_fast_as_one(database_url, tmp_path, redis_server):
    async with Phase("one", database_url, tmp_path, redis_url=None) as single:
        bots = await single.start_processes(1)
        await single.ask_all(bots)
        await single.wait_until_answered(120)
        assert single.inexact() == []
        single.limits_kept()
        single_lag = single.mean_lag()
        assert (await single.health(single.processes[0]))["redis"] == "unused"

    async with Phase("two", database_url, tmp_path, redis_url=redis_server.url) as double:
        bots = await double.start_processes(2)
        assert [(await double.health(p))["redis"] for p in double.processes] == ["ok", "ok"]
        await double.ask_all(bots)
        await double.wait_until_answered(120)
        assert double.inexact() == []
        double.limits_kept()
        double_lag = double.mean_lag()

    print(f"mean visible lag: one process {single_lag:.2f} s, two processes with Redis {double_lag:.2f} s")
    assert double_lag <= 1.25 * single_lag + 0.05, (single_lag, double_lag)


async def test_answers_complete_when_redis_dies_midway(database_url, tmp_path, redis_server):
    async with Phase("kill", database_url, tmp_path, redis_url=redis_server.url) as phase:
        bots = await phase.start_processes(2)
        asking = asyncio.create_task(phase.ask_all(bots))
        await asyncio.sleep(2.0)
        redis_server.kill()
        await asking
        await phase.wait_until_answered(120)
        assert phase.inexact() == []
        assert [(await phase.health(p))["redis"] for p in phase.processes] == ["unavailable", "unavailable"]
        logs = [p.log() for p in phase.processes]
        assert all(log.count("Redis is not answering") == 1 for log in logs), "each process says so, once"
        assert all("Traceback" not in log for log in logs)
