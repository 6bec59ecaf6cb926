"""The one owner of a workspace's Slack budgets: every write the bot makes goes through here.

Each Slack method has its own limit, per workspace or per channel (REFERENCE.md, "Web API limits"),
and a 429 pauses only that method there. A `SlackScheduler` holds one budget per (method, scope):

* messages that grow (an answer being edited) share `edits`, a `WriterLane` that always sends the
  latest text of the message most behind;
* one-off calls (a placeholder, a continuation, a notice, a DM, the Home tab) wait in a `CallLane`
  for their turn. A call that Slack rate-limits waits out the `Retry-After` and goes again ahead of
  later arrivals; a network fault is retried a few times. Only a real refusal (`not_in_channel`, …)
  reaches the caller: a question waiting its turn is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.delivery.budgets import Budget, Limit, SlackBudget
from bot.delivery.call_lane import NORMAL, CallLane
from bot.delivery.markdown import markdown_message
from bot.delivery.writer_lane import WriterLane
from bot.slack_errors import NETWORK_ERRORS, is_transient_slack_error, retry_after_seconds, surely_not_done

log = logging.getLogger(__name__)

CALL_ATTEMPTS = 5
MIN_STREAM_INTERVAL = 0.5
TYPICAL_ANSWER_SECONDS = 10.0
# Calls that do the same thing however often they are sent: any failure may be tried again. Anything else
# (a post, a stream's start or append) is sent again only when the failed try surely did nothing.
IDEMPOTENT = {
    "chat.update",
    "views.publish",
    "conversations.open",
    "assistant.threads.setStatus",
    "agents.sessions.setStatus",
    "assistant.threads.setSuggestedPrompts",
    "chat.stopStream",
}

# Slack's tiers for the one-off methods the bot calls, per workspace (Tier 3: 50+, Tier 4: 100+ a minute).
# Calls made once per moment a user sees (an ephemeral reply, a Home tab, a session's status): spreading them
# gains nothing and delays what people wait for, so each may use its whole window at once.
WORKSPACE_LIMITS = {
    method: Limit.per_minute(calls, burst=calls)
    for method, calls in {
        "chat.postEphemeral": 100,
        "views.publish": 100,
        "views.open": 100,
        "conversations.open": 50,
        "agents.sessions.setStatus": 50,
        "assistant.threads.setSuggestedPrompts": 50,
        "files.getUploadURLExternal": 100,
        "files.completeUploadExternal": 100,
    }.items()
}
UNKNOWN_METHOD_LIMIT = Limit.per_minute(20, burst=20)  # Tier 2, the lowest common
# Per channel: a new message (posted or streamed), and the assistant status of a thread (about 60 a minute).
CHANNEL_POSTS = "channel posts"
PER_CHANNEL = {CHANNEL_POSTS, "assistant.threads.setStatus"}
# The budgets a method spends: a stream's start is a new message in the channel as well.
SPENDS = {
    "chat.postMessage": (CHANNEL_POSTS,),
    "chat.startStream": (CHANNEL_POSTS, "chat.startStream"),
    # slack_sdk's files_upload_v2: an upload URL, the bytes, then the share (a message in the channel).
    "files.uploadV2": ("files.getUploadURLExternal", "files.completeUploadExternal", CHANNEL_POSTS),
}
CLIENT_FUNCTIONS = {"files.uploadV2": "files_upload_v2"}  # the rest are named like the method


@dataclass(frozen=True)
class DeliveryLimits:
    """This process's share of each workspace's budgets (settings, divided by SLACK_BUDGET_SHARE)."""

    edits_per_minute: int = 50
    update_interval: float = 1.0
    channel_posts_per_second: float = 1.0
    channel_post_burst: int = 2
    stream_appends_per_minute: int = 100
    stream_starts_per_minute: int = 20
    stream_stops_per_minute: int = 20


class BudgetMaker(Protocol):
    def budget(self, key: str, limit: Limit) -> SlackBudget: ...


class LocalBudgets:
    """Budgets kept in this process. With SLACK_BUDGET_SHARE = N processes and no Redis, each keeps 1/N of
    every budget, so that together they stay within Slack's limits without talking to each other."""

    def __init__(self, share: int = 1, clock: Callable[[], float] = time.monotonic):
        self.share = share
        self._clock = clock

    def budget(self, key: str, limit: Limit) -> SlackBudget:
        return Budget(limit.share(self.share), self._clock)


class SlackScheduler:
    """One workspace's Slack budgets (see the module docstring)."""

    def __init__(
        self,
        limits: DeliveryLimits,
        clock: Callable[[], float] = time.monotonic,
        *,
        team_id: str = "",
        budgets: BudgetMaker | None = None,
    ):
        self._limits = limits
        self._clock = clock
        self._team_id = team_id
        self._budgets = budgets or LocalBudgets(clock=clock)
        self.edits = WriterLane(
            self._budget("chat.update", None, Limit.per_minute(limits.edits_per_minute)),
            interval=limits.update_interval,
            method="chat.update",
            clock=clock,
        )
        # Appends, unlike edits, may come in a burst of half the window: a burst of answers is short (its streams
        # end, and their stops carry the rest), and Slack renders appended text smoothly. Each stream is appended
        # at most every `stream_interval()` seconds, so that the burst lasts about as long as the answers do.
        self.appends = WriterLane(
            self._budget(
                "chat.appendStream",
                None,
                Limit.per_minute(limits.stream_appends_per_minute, burst=limits.stream_appends_per_minute // 2),
            ),
            interval=self.stream_interval,
            method="chat.appendStream",
            clock=clock,
        )
        self._workspace_limits = {
            **WORKSPACE_LIMITS,
            # One start and one stop per stream: nothing is gained by spreading them, only by not exceeding the window.
            "chat.startStream": Limit.per_minute(
                limits.stream_starts_per_minute, burst=limits.stream_starts_per_minute
            ),
            "chat.stopStream": Limit.per_minute(limits.stream_stops_per_minute, burst=limits.stream_stops_per_minute),
        }
        self._lanes: dict[tuple[str, str | None], CallLane] = {}
        self.open_streams = 0  # streams started and not yet stopped: each will need a stop

    def _budget(self, name: str, channel: str | None, limit: Limit) -> SlackBudget:
        # One Redis hash slot per budget ({...}), so that the script's keys may live in a cluster.
        return self._budgets.budget(f"slackbot:{{{self._team_id}:{name}:{channel or ''}}}", limit)

    def stream_interval(self) -> float:
        """Half a second for a stream alone; with many open, a pace at which half the append budget lasts ten
        seconds (the length of a typical answer)."""
        burst_per_second = self.appends.budget.limit.calls / 2 / TYPICAL_ANSWER_SECONDS
        return max(MIN_STREAM_INTERVAL, self.open_streams / burst_per_second)

    def _lane(self, budget: str, channel: str | None) -> CallLane:
        key = (budget, channel if budget in PER_CHANNEL else None)
        lane = self._lanes.get(key)
        if lane is None:
            if budget == CHANNEL_POSTS:
                limit = Limit.per_second(self._limits.channel_posts_per_second, self._limits.channel_post_burst)
            elif budget in PER_CHANNEL:
                limit = Limit.per_minute(60, burst=60)
            else:
                limit = self._workspace_limits.get(budget, UNKNOWN_METHOD_LIMIT)
            lane = self._lanes[key] = CallLane(self._budget(budget, key[1], limit))
        return lane

    def _lanes_for(self, method: str, channel: str | None) -> list[CallLane]:
        return [self._lane(budget, channel) for budget in SPENDS.get(method, (method,))]

    def may_start_stream(self, channel: str) -> bool:
        """Whether a new native stream can start now and be stopped in time: its start and the channel's post
        turn are free, and the stops of the streams already open leave room for one more."""
        lanes = self._lanes_for("chat.startStream", channel)
        stops = self._lane("chat.stopStream", None)
        free_stops = stops.budget.limit.calls - stops.budget.used() - self.open_streams
        return all(lane.waiting == 0 and lane.budget.wait_time() == 0 for lane in lanes) and free_stops > 0

    @property
    def waiting(self) -> int:
        """Calls and messages waiting for their turn (the scheduler's queue depth)."""
        return self.edits.waiting + self.appends.waiting + sum(lane.waiting for lane in self._lanes.values())

    @property
    def idle(self) -> bool:
        return (
            self.edits.idle
            and self.appends.idle
            and not self.open_streams
            and all(lane.idle for lane in self._lanes.values())
        )

    def prune(self) -> None:
        """Forget the budgets of channels that have been quiet for a whole window."""
        for key in [key for key, lane in self._lanes.items() if lane.idle]:
            del self._lanes[key]

    async def call(
        self,
        client: AsyncWebClient,
        method: str,
        *,
        priority: int = NORMAL,
        at_turn: Callable[[], dict] | None = None,
        **arguments,
    ) -> AsyncSlackResponse:
        """Make one Slack call when its budget allows; raises SlackApiError only for a refusal that waiting
        cannot cure, or after repeated network faults. `at_turn` gives arguments decided only when the call
        is sent (a post that waited its turn carries what is newest then)."""
        channel = arguments.get("channel") or arguments.get("channel_id")
        places = [lane.place() for lane in self._lanes_for(method, channel)]
        api = getattr(client, CLIENT_FUNCTIONS.get(method) or method.replace(".", "_"))
        failures = 0
        while True:
            async with contextlib.AsyncExitStack() as turns:
                # Several budgets are taken in one fixed order, so that two calls never wait for each other.
                granted = [
                    await turns.enter_async_context(lane.turn(priority, place=place))
                    for lane, place in zip(self._lanes_for(method, channel), places, strict=True)
                ]
                try:
                    return await api(**arguments, **(at_turn() if at_turn else {}))
                except SlackApiError as error:
                    wait = retry_after_seconds(error)
                    if wait is not None:
                        for turn in granted:  # Slack does not say which of the limits it was
                            turn.rate_limited(wait)
                        log.info("%s rate-limited (%s); waiting %.1fs", method, channel or "", wait)
                        continue
                    if not is_transient_slack_error(error):
                        raise
                    failure: Exception = error
                except NETWORK_ERRORS as error:
                    failure = error
            if method not in IDEMPOTENT and not surely_not_done(failure):
                log.warning(
                    "%s failed (%s) and may have been done: not sending it again", method, failure.__class__.__name__
                )
                raise failure
            failures += 1
            if failures >= CALL_ATTEMPTS:
                log.warning("%s failed %d times (%s); giving up", method, failures, failure.__class__.__name__)
                raise failure
            await asyncio.sleep(0.5 * 2**failures)

    async def post_markdown(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str | None,
        markdown: str | Callable[[], str],
        blocks: list[dict] | None = None,
        priority: int = NORMAL,
    ) -> str:
        """Post a message Slack renders from Markdown (or from what `markdown()` says when the post is sent),
        with `blocks` under it."""
        text = markdown if callable(markdown) else (lambda: markdown)
        response = await self.call(
            client,
            "chat.postMessage",
            priority=priority,
            channel=channel,
            thread_ts=thread_ts,
            at_turn=lambda: markdown_message(text(), blocks),
        )
        return response["ts"]

    async def direct_message(
        self, client: AsyncWebClient, user_id: str, *, text: str, blocks: list[dict] | None = None
    ) -> str:
        """Post a message in the bot's DM with `user_id`; returns its ts."""
        channel = await self._dm_channel(client, user_id)
        extra: dict[str, Any] = {"blocks": blocks} if blocks else {}
        return (await self.call(client, "chat.postMessage", channel=channel, text=text, **extra))["ts"]

    async def upload_to_dm(
        self, client: AsyncWebClient, user_id: str, *, filename: str, content: str, title: str, comment: str
    ) -> None:
        """Share a file in the bot's DM with `user_id` (files.uploadV2), with `comment` as its message."""
        channel = await self._dm_channel(client, user_id)
        await self.call(
            client,
            "files.uploadV2",
            channel=channel,
            filename=filename,
            content=content,
            title=title,
            initial_comment=comment,
        )

    async def _dm_channel(self, client: AsyncWebClient, user_id: str) -> str:
        return (await self.call(client, "conversations.open", users=user_id))["channel"]["id"]

    async def close(self) -> None:
        await self.edits.close()
        await self.appends.close()
        await asyncio.gather(*(lane.close() for lane in self._lanes.values()))


class SlackSchedulers:
    """One scheduler per workspace, created on first use and dropped once idle.

    A scheduler is dropped only after nobody asked for it for `forget_after` seconds and it has nothing
    waiting, in flight or counted in a window: whoever holds one must never find a second one beside it
    (two would each spend the whole budget)."""

    def __init__(
        self,
        limits: DeliveryLimits,
        clock: Callable[[], float] = time.monotonic,
        *,
        budgets: BudgetMaker | None = None,
        forget_after: float = 600.0,
    ):
        self.limits = limits
        self._clock = clock
        self._budgets = budgets or LocalBudgets(clock=clock)
        self._forget_after = forget_after
        self._by_team: dict[str, SlackScheduler] = {}
        self._asked: dict[str, float] = {}

    def for_team(self, team_id: str) -> SlackScheduler:
        scheduler = self._by_team.get(team_id)
        if scheduler is None:
            scheduler = self._by_team[team_id] = SlackScheduler(
                self.limits, self._clock, team_id=team_id, budgets=self._budgets
            )
        self._asked[team_id] = self._clock()
        return scheduler

    def __len__(self) -> int:
        return len(self._by_team)

    @property
    def waiting(self) -> int:
        return sum(scheduler.waiting for scheduler in self._by_team.values())

    def prune(self) -> None:
        quiet_since = self._clock() - self._forget_after
        for team_id, scheduler in list(self._by_team.items()):
            scheduler.prune()
            if scheduler.idle and self._asked[team_id] < quiet_since:
                del self._by_team[team_id], self._asked[team_id]

    async def close(self) -> None:
        await asyncio.gather(*(scheduler.close() for scheduler in self._by_team.values()))
