"""One scenario: N answers at once, first through the real bot, then through each reference approach.

The bot runs alone (its CPU time, memory and event-loop lag are measured in that phase); the reference
approaches then run together, each in a workspace of its own, on the same token streams.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
from slack_sdk.oauth.installation_store import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore

from bench.measure import AnswerTrace, LoopProbe, shown_prefix
from bench.references import Counters, reference_client, run_reference_answer
from bench.sender import BOT_USER
from bench.world import BenchSlack, TimedAnthropic, add_team, answer_text, question_for, script_for
from config import load_settings
from storage import create_engine, migrate
from tests.process import ROOT, free_port

log = logging.getLogger("bench")
SIGNING_SECRET = "bench-signing-secret"
_ts = itertools.count(1)
FAKES_LOOP_LAG_WARNING = 0.1


@dataclass(frozen=True)
class Scenario:
    answers: int
    workspaces: int = 1

    @property
    def name(self) -> str:
        return f"{self.answers}" if self.workspaces == 1 else f"{self.answers} in {self.workspaces} ws"

    @property
    def per_workspace(self) -> int:
        return math.ceil(self.answers / self.workspaces)


@dataclass
class Options:
    words: int = 400
    words_per_second: float = 40.0
    delta_chars: int = 12
    ramp: float = 1.0  # the mentions of a scenario arrive spread over this many seconds
    time_limit: float = 240.0  # an approach still writing after this is cut off (its unseen text counts as late)
    interval: float = 1.0
    edits_per_minute: int = 50
    references: tuple[str, ...] = ()
    claude_max_streams: int | None = None  # the bot's default when None


@dataclass
class Run:
    """What one approach did in one scenario."""

    approach: str
    scenario: Scenario
    traces: list[AnswerTrace] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0
    channels: dict[str, str] = field(default_factory=dict)  # answer id -> channel
    sent_at: dict[str, float] = field(default_factory=dict)  # answer id -> mention (or start) time
    acks: list[float] = field(default_factory=list)  # as bench/sender.py saw them, from a process of its own
    handled: list[float] = field(default_factory=list)  # as the bot measured them, from request to response
    cpu_seconds: float | None = None
    rss_growth: int | None = None
    loop_lags: list[float] = field(default_factory=list)
    cut_off: bool = False


class World:
    """The fakes, shared by every scenario of a run."""

    def __init__(self, options: Options):
        self.options = options
        self.slack = BenchSlack()
        self.claude = TimedAnthropic()
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-")

    async def __aenter__(self) -> World:
        await self.slack.start()
        await self.claude.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.claude.stop()
        await self.slack.stop()
        self.tmp.cleanup()

    def plan_answers(self, prefix: str, count: int) -> list[str]:
        ids = [f"{prefix}{k}" for k in range(count)]
        for answer_id in ids:
            text = answer_text(answer_id, self.options.words)
            self.claude.plan(
                answer_id,
                script_for(text, words_per_second=self.options.words_per_second, delta_chars=self.options.delta_chars),
            )
        # The planned answers are hundreds of thousands of objects that live until the run ends: a full collection
        # of them, due at any moment, stopped the fakes' loop for 0.3 to 0.5 s mid-burst, and every figure of
        # that moment counted it against the bot. The collector need not look at them.
        gc.unfreeze()  # what earlier runs left is collected now
        gc.collect()
        gc.freeze()
        return ids

    def bot_values(
        self, *, team: str | None = None, database_url: str | None = None, name: str = "bot", **overrides
    ) -> dict:
        """The bot's settings for one run: in the workspace `team` (single-workspace mode), else in OAuth mode
        (`overrides` say so). Every run has a workspace of its own: Slack's minute windows don't carry over."""
        o = self.options
        values = dict(
            slack_bot_token=f"xoxb-bench-{team}" if team else None,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=self.slack.api_url,
            anthropic_api_key="bench-key",
            anthropic_base_url=self.claude.base_url,
            database_url=database_url or f"sqlite+aiosqlite:///{Path(self.tmp.name) / f'{name}.db'}",
            slack_update_interval=o.interval,
            slack_edits_per_minute=o.edits_per_minute,
            claude_max_tokens=max(1024, o.words * 3),
            free_credits=10**9,
            ai_credits_per_message=1,
            sweep_interval_seconds=3600,
            log_level="WARNING",
        )
        if o.claude_max_streams is not None:
            values["claude_max_streams"] = o.claude_max_streams
        values.update(overrides)
        return values

    def bot_settings(self, name: str, *, team: str | None = None, database_url: str | None = None, **overrides):
        """Settings for a bot started in this process."""
        return load_settings(
            _env_file=None, port=0, **self.bot_values(team=team, database_url=database_url, name=name, **overrides)
        )


async def _send_from_slack_side(world: World, tag: str, mentions: list[dict]) -> list[dict]:
    """The mentions sent by `python -m bench.sender` (why: its docstring); what it measured of each."""
    plan_path = Path(world.tmp.name) / f"{tag}-mentions.json"
    plan_path.write_text(json.dumps({"signing_secret": SIGNING_SECRET, "mentions": mentions}))
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sender", str(plan_path), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await sender.communicate()
    if sender.returncode != 0:
        raise SystemExit(f"the sender of the mentions failed (exit {sender.returncode})")
    return json.loads(output)


def _teams_for(world: World, scenario: Scenario, tag: str) -> list[str]:
    teams = [f"T{tag}W{w}" for w in range(scenario.workspaces)]
    for team in teams:
        add_team(world.slack, team)
    return teams


async def run_bot(
    world: World,
    scenario: Scenario,
    tag: str,
    *,
    mode: str = "auto",
    database_url: str | None = None,
    processes: int = 1,
    redis_url: str | None = None,
) -> Run:
    """The bot in `processes` processes of its own (bench/bot_process.py) on one database (and one Redis when
    there are several); the mentions go to each process in turn."""
    run = Run(f"bot ({mode})" if processes == 1 else f"bot ({mode}, {processes} processes)", scenario)
    ids = world.plan_answers(f"{tag}b{mode[0]}{processes}", scenario.answers)
    teams = _teams_for(world, scenario, f"{tag}b{mode[0]}{processes}")
    oauth = {"slack_client_id": "111.222", "slack_client_secret": "bench"} if scenario.workspaces > 1 else {}
    values = world.bot_values(
        team=None if oauth else teams[0],
        database_url=database_url,
        name=f"{tag}{mode}{processes}",
        slack_streaming=mode,
        redis_url=redis_url,
        **oauth,
    )
    await prepare_database(values["database_url"], teams if oauth else [])
    bots = [BotChild(values, Path(world.tmp.name), f"{tag}{mode}{processes}-{n}") for n in range(processes)]
    own_loop = LoopProbe()
    try:
        await asyncio.gather(*(bot.start() for bot in bots))
        own_loop.start()
        run.started_at = time.monotonic()
        mentions = []
        for k, answer_id in enumerate(ids):
            run.channels[answer_id] = f"C{answer_id}"
            mentions.append(
                {
                    "delay": k * world.options.ramp / scenario.answers,
                    "url": bots[k % len(bots)].events_url,
                    "team": teams[k % len(teams)],
                    "channel": run.channels[answer_id],
                    "question": question_for(answer_id),
                }
            )
        for answer_id, sent in zip(ids, await _send_from_slack_side(world, tag, mentions), strict=True):
            run.sent_at[answer_id] = sent["sent_at"]
            run.acks.append(sent["ack"])
            if sent["status"] != 200:
                log.warning("the bot answered a mention with HTTP %d", sent["status"])
        await asyncio.sleep(0.5)  # every answer has been handed over (and the status files say so)
        deadline = run.started_at + world.options.time_limit
        while any(bot.working() for bot in bots) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        run.cut_off = any(bot.working() for bot in bots)
        run.ended_at = time.monotonic()
    finally:
        await own_loop.stop()
        measured = await asyncio.gather(*(bot.stop() for bot in bots))
    run.loop_lags = [lag for m in measured for lag in m.get("loop_lags", [])]
    run.cpu_seconds = sum(m.get("cpu_seconds", 0.0) for m in measured)
    run.rss_growth = sum(m.get("rss_growth", 0) for m in measured)
    run.handled = [d for m in measured for d in m.get("handling", [])]
    run.traces = collect(world, run, ids)
    if own_loop.lags and max(own_loop.lags) > FAKES_LOOP_LAG_WARNING:
        log.warning(
            "the fakes' own event loop lagged up to %.0f ms in %s: the figures of that moment include it",
            max(own_loop.lags) * 1000,
            run.approach,
        )
    return run


async def prepare_database(url: str, teams: list[str]) -> None:
    """Migrated, and in OAuth mode each workspace has installed the app with a token of its own."""
    engine = create_engine(url)
    try:
        await migrate(engine)
        store = AsyncSQLAlchemyInstallationStore(client_id="111.222", engine=engine, logger=log)
        for team in teams:
            await store.async_save(
                Installation(
                    app_id="A0001",
                    enterprise_id=None,
                    team_id=team,
                    team_name=team,
                    bot_token=f"xoxb-bench-{team}",
                    bot_id="BBOT",
                    bot_user_id=BOT_USER,
                    bot_scopes=["chat:write"],
                    user_id="U0001",
                    installed_at=time.time(),
                )
            )
    finally:
        await engine.dispose()


class BotChild:
    """One `python -m bench.bot_process`, configured by its environment."""

    def __init__(self, values: dict, workdir: Path, name: str):
        self.port = free_port()
        self.status_path = workdir / f"{name}.status.json"
        self.log_path = workdir / f"{name}.log"
        self.environment = {key.upper(): str(value) for key, value in values.items() if value is not None}
        self.environment.update(PORT=str(self.port), PATH=os.environ.get("PATH", ""), PYTHONPATH=str(ROOT))
        self.workdir = workdir  # holds no .env: the environment is the whole configuration
        self._process: subprocess.Popen | None = None

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    def status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}

    def working(self) -> bool:
        return self.status().get("tasks", 0) > 0

    async def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bench.bot_process", str(self.status_path)],
                cwd=self.workdir,
                env=self.environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while "port" not in self.status():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the bot did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.05)

    async def stop(self) -> dict:
        """SIGTERM; what the process measured."""
        if self._process is None:
            return {}
        self._process.terminate()
        deadline = time.monotonic() + 60
        while not self.status().get("done") and self._process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        while self._process.poll() is None and time.monotonic() < deadline:  # the fakes go on answering meanwhile
            await asyncio.sleep(0.05)
        if self._process.poll() is None:
            self._process.kill()
        return self.status()


async def run_references(world: World, scenario: Scenario, tag: str) -> list[Run]:
    runs = {kind: Run(kind, scenario) for kind in world.options.references}
    counters = {kind: Counters() for kind in runs}
    claude = anthropic.AsyncAnthropic(
        api_key="bench-key", base_url=world.claude.base_url, max_retries=0, http_client=None
    )
    tasks, ids_of, clients = [], {}, []
    for kind, run in runs.items():
        ids = world.plan_answers(f"{tag}{kind[:2]}{kind[-2:]}", scenario.answers)
        ids_of[kind] = ids
        teams = _teams_for(world, scenario, f"{tag}{kind}")
        per_team = {
            team: reference_client(kind, f"xoxb-bench-{team}", world.slack.api_url, counters[kind]) for team in teams
        }
        clients.extend(per_team.values())
        run.started_at = time.monotonic()
        for k, answer_id in enumerate(ids):
            channel = f"C{answer_id}"
            run.channels[answer_id] = channel
            client = per_team[teams[k % len(teams)]]

            async def one(k=k, answer_id=answer_id, channel=channel, client=client, run=run, kind=kind):
                await asyncio.sleep(k * world.options.ramp / scenario.answers)
                run.sent_at[answer_id] = time.monotonic()
                thread_ts = f"{1_700_000_000 + next(_ts)}.000100"
                await run_reference_answer(
                    kind, client, claude, channel, thread_ts, question_for(answer_id), counters[kind]
                )

            tasks.append(asyncio.get_running_loop().create_task(one()))
    done, pending = await asyncio.wait(tasks, timeout=world.options.time_limit)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            log.warning("a reference answer failed: %r", task.exception())
    await claude.close()
    ended = time.monotonic()
    for kind, run in runs.items():
        run.ended_at = ended
        run.cut_off = bool(pending)
        run.traces = collect(world, run, ids_of[kind])
    return list(runs.values())


def collect(world: World, run: Run, ids: list[str]) -> list[AnswerTrace]:
    traces = []
    for answer_id in ids:
        received = world.claude.by_marker.get(answer_id)
        expected = world.claude.scripts[answer_id].text
        trace = AnswerTrace(answer_id, expected, emitted=list(getattr(received, "emitted", [])))
        channel = run.channels.get(answer_id)
        messages = [m for m in world.slack.channel_messages(channel) if not m.deleted] if channel else []
        for message in messages:
            for at, text, blocks in message.states:
                markdown = "".join(b.get("text", "") for b in blocks or [] if b.get("type") == "markdown") or text
                trace.shown.append((at, shown_prefix(expected, markdown)))
        trace.final_text = "\n".join(world.slack.visible_markdown(m) for m in messages)
        traces.append(trace)
    return traces
