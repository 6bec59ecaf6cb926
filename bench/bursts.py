"""Bursts of questions in a few channels: does every question get exactly one visible outcome?

Slack lets an app post about once a second per channel (the fake: a burst of 3, then one a second), so
20 questions arriving together in one channel need 20 s of posts whatever the bot does. What is measured
is that none is lost: each question's thread ends with exactly one message, the answer (exact) or the
true reason there is none (here: the workspace's credits ran out), and how long the asker waited for it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from bench.measure import percentile
from bench.scenarios import SIGNING_SECRET, World
from bench.sender import signed_mention
from bench.world import add_team
from bot.server import start_bot

PRICE = 10
NOT_ENOUGH = "doesn't have enough credits"


@dataclass(frozen=True)
class Burst:
    mentions: int
    channels: int
    seconds: float
    credits_for: int | None = None  # answers the workspace can pay for; None: plenty

    @property
    def name(self) -> str:
        credits = f", credits for {self.credits_for}" if self.credits_for is not None else ""
        return f"{self.mentions} in {self.seconds:g} s over {self.channels} ch{credits}"


def parse_bursts(spec: str) -> list[Burst]:
    """ "200@10ch/2s:50,30@1ch/3s": mentions @ channels / seconds, optionally : answers the credits pay for."""
    bursts = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "none":
            continue
        head, _, credits = part.partition(":")
        mentions, _, rest = head.partition("@")
        channels, _, seconds = rest.partition("/")
        bursts.append(
            Burst(
                int(mentions),
                int(channels.removesuffix("ch")),
                float(seconds.removesuffix("s") or 1),
                int(credits) if credits else None,
            )
        )
    return bursts


@dataclass
class BurstRow:
    burst: str
    database: str
    answered: int
    no_credits: int
    silent: int
    several: int
    other: int
    rate_limited: int
    outcome_p50: float
    outcome_p95: float
    outcome_max: float
    seconds: float


async def _mention(http: aiohttp.ClientSession, url: str, team: str, channel: str, n: int, question: str) -> str:
    ts = f"{1_700_100_000 + n}.{int(time.time() * 1000) % 1_000_000:06d}"
    body, headers = signed_mention(
        SIGNING_SECRET, team, channel, question, event_id=f"EvBurst{channel}{n}", ts=ts, user=f"U{n:04d}"
    )
    async with http.post(url, data=body, headers=headers) as response:
        await response.read()
    return ts


async def run_burst(world: World, burst: Burst, tag: str, *, database_url: str | None, time_limit: float) -> BurstRow:
    ids = world.plan_answers(f"{tag}q", burst.mentions)
    overrides = {"ai_credits_per_message": PRICE}
    overrides["free_credits"] = PRICE * burst.credits_for if burst.credits_for is not None else 10**9
    team = add_team(world.slack, f"T{tag}").team_id
    settings = world.bot_settings(tag, team=team, database_url=database_url, **overrides)
    bot = await start_bot(settings, host="127.0.0.1", port=0)
    url = f"http://127.0.0.1:{bot.port}/slack/events"
    channels = [f"C{tag}B{k}" for k in range(burst.channels)]
    sent: list[tuple[str, str, str, float]] = []  # answer id, channel, thread ts, sent at
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(n: int, answer_id: str) -> None:
            await asyncio.sleep(n * burst.seconds / burst.mentions)
            channel = channels[n % len(channels)]
            at = time.monotonic()
            ts = await _mention(http, url, team, channel, n, f"tell me something [{answer_id}]")
            sent.append((answer_id, channel, ts, at))

        try:
            await asyncio.gather(*(one(n, answer_id) for n, answer_id in enumerate(ids)))
            while len(bot.services.tasks) and time.monotonic() < started + time_limit:
                await asyncio.sleep(0.1)
        finally:
            await bot.stop()
    return _classify(world, burst, sent, database_url, time.monotonic() - started)


def _classify(world: World, burst: Burst, sent, database_url: str | None, seconds: float) -> BurstRow:
    counts = {"answered": 0, "no_credits": 0, "silent": 0, "several": 0, "other": 0}
    waits = []
    channels = {channel for _, channel, _, _ in sent}
    posted_at = {  # when each reply appeared (a post, or the start of a stream), on the fake's clock (like `at`)
        call.response["ts"]: call.at
        for call in world.slack.calls
        if call.method in ("chat.postMessage", "chat.startStream")
        and call.status == 200
        and call.params.get("channel") in channels
    }
    for answer_id, channel, ts, at in sent:
        replies = world.slack.thread(channel, ts)
        expected = world.claude.scripts[answer_id].text
        if not replies:
            counts["silent"] += 1
            continue
        if len(replies) > 1:
            counts["several"] += 1
        shown = world.slack.visible_markdown(replies[0])
        if shown.startswith(expected):
            counts["answered"] += 1
        elif NOT_ENOUGH in shown:
            counts["no_credits"] += 1
        else:
            counts["other"] += 1
        waits.append(posted_at[replies[0].ts] - at)
    limited = sum(1 for call in world.slack.calls if call.status == 429 and call.params.get("channel") in channels)
    return BurstRow(
        burst=burst.name,
        database="postgresql" if database_url and "postgresql" in database_url else "sqlite",
        rate_limited=limited,
        outcome_p50=percentile(waits, 50),
        outcome_p95=percentile(waits, 95),
        outcome_max=max(waits, default=float("nan")),
        seconds=seconds,
        **counts,
    )


BURST_HEADER = (
    "| burst | database | answered exactly | told: no credits | silent | more than one reply | other | 429s | "
    "mention→outcome p50/p95/max s | total s |"
)


def burst_table(rows: list[BurstRow]) -> str:
    lines = [BURST_HEADER, "|" + "---|" * (BURST_HEADER.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.burst} | {r.database} | {r.answered} | {r.no_credits} | {r.silent} | {r.several} | {r.other} | "
            f"{r.rate_limited} | {r.outcome_p50:.1f}/{r.outcome_p95:.1f}/{r.outcome_max:.1f} | {r.seconds:.0f} |"
        )
    return "\n".join(lines)
