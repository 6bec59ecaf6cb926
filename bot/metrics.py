"""What the bot measures, exposed at GET /metrics in Prometheus' text format (optionally behind METRICS_TOKEN).

Counters and histograms live in prometheus-client's default registry (billing adds its own there); the
gauges that describe live state (the schedulers' queues, answers in progress) are read when scraped.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import weakref
from collections.abc import Callable, Iterable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120)

ANSWERS = Counter("slackbot_answers", "Questions by outcome", ["outcome"])
FIRST_TEXT = Histogram(
    "slackbot_first_text_seconds",
    "From the question (its Slack ts) to Claude's first words sent to Slack",
    buckets=SECONDS,
)
VISIBLE_LAG = Histogram(
    "slackbot_visible_lag_seconds", "How long Claude's text waited before a Slack write showed it", buckets=SECONDS
)
SLACK_CALLS = Counter("slackbot_slack_calls", "Slack Web API calls by method", ["method"])
SLACK_RATE_LIMITED = Counter("slackbot_slack_rate_limited", "Slack Web API calls answered 429, by method", ["method"])
CLAUDE_TOKENS = Counter("slackbot_claude_tokens", "Tokens of Claude's answers, by kind", ["kind"])
CREDITS_CHARGED = Counter("slackbot_credits_charged", "Credits charged for answers")
LOOP_LAG = Histogram(
    "slackbot_event_loop_lag_seconds",
    "How late the event loop ran a timer (sampled every 0.5 s)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LOOP_SAMPLE_EVERY = 0.5


def count_tokens(usage) -> None:
    """Claude's usage (billing.TokenUsage) of one answer."""
    for kind, tokens in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_input_tokens),
        ("cache_write", usage.cache_creation_input_tokens),
    ):
        if tokens:
            CLAUDE_TOKENS.labels(kind).inc(tokens)


def first_text_after(question_ts: str) -> None:
    try:
        FIRST_TEXT.observe(max(time.time() - float(question_ts), 0.0))
    except ValueError:
        pass


def slack_trace() -> aiohttp.TraceConfig:
    """Counts every Slack Web API call made on the session it is given to, by method, and its 429s."""
    trace = aiohttp.TraceConfig()

    async def on_request_end(_session, _context, params: aiohttp.TraceRequestEndParams) -> None:
        method = params.url.path.rsplit("/", 1)[-1] or "unknown"
        SLACK_CALLS.labels(method).inc()
        if params.response.status == 429:
            SLACK_RATE_LIMITED.labels(method).inc()

    trace.on_request_end.append(on_request_end)
    return trace


async def watch_event_loop(clock: Callable[[], float] = time.monotonic) -> None:
    """Samples the event loop's lag until cancelled: how much later than asked a sleep returns."""
    while True:
        asked = clock()
        await asyncio.sleep(LOOP_SAMPLE_EVERY)
        LOOP_LAG.observe(max(clock() - asked - LOOP_SAMPLE_EVERY, 0.0))


class LiveState(Collector):
    """Gauges read at scrape time from every running bot of this process (tests run several)."""

    def __init__(self) -> None:
        self._bots: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # by id: Services is unhashable

    def watch(self, services) -> None:
        self._bots[id(services)] = services

    def collect(self) -> Iterable[GaugeMetricFamily]:
        bots = list(self._bots.values())
        queued = GaugeMetricFamily("slackbot_scheduler_queue_depth", "Slack calls and writes waiting for their budget")
        queued.add_metric([], sum(bot.slack.waiting for bot in bots))
        schedulers = GaugeMetricFamily("slackbot_schedulers", "Per-workspace Slack schedulers alive")
        schedulers.add_metric([], sum(len(bot.slack) for bot in bots))
        running = GaugeMetricFamily("slackbot_background_tasks", "Answers and other work running after Slack's ack")
        running.add_metric([], sum(len(bot.tasks) for bot in bots))
        return [queued, schedulers, running]


LIVE_STATE = LiveState()
REGISTRY.register(LIVE_STATE)


def metrics_route(token: str | None) -> web.RouteDef:
    async def metrics(request: web.Request) -> web.Response:
        if token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=401, text="unauthorized", headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return web.get("/metrics", metrics)
