"""Slack budgets shared by every bot process through Redis (REDIS_URL).

Slack counts a workspace's calls per app, not per process: two processes pacing themselves each with the
whole budget would spend it twice. With Redis, each budget (a method in a workspace, or posts in a
channel) is one set of keys, and one Lua script takes a call atomically: it drops what left the window,
checks the pause and the window, refills the bucket and counts the call, on Redis's own clock (so the
processes' clocks need not agree). A 429's Retry-After is written there too, so every process waits it
out. The keys expire a second after their window: nothing grows.

Redis that does not answer within `timeout` (50 ms) is not waited for: the budget falls back
to this process's share of it (`SLACK_BUDGET_SHARE`, 2 by default with Redis), the log says so once, and the
shared budget is tried again a second later. No answer fails because of Redis. One process alone may fall
back while the others still count in Redis (a busy moment of its own loop looks like a slow Redis). The
fallback then leaves alone what the shared window held when Redis last answered, and the calls it made are
written to Redis as soon as it answers again, so that nobody goes on spending them twice. What the others
spend in Redis during the fallback itself, this process cannot see: there, a 429's pause (shared again once
Redis answers) is what brings everyone back under the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.delivery.budgets import Budget, Clock, Limit

log = logging.getLogger(__name__)

TIMEOUT = 0.05
RETRY_AFTER = 1.0
MIN_RECHECK = 0.05  # seconds

# KEYS: the window (a sorted set of call times), the bucket (a hash), the pause (a time).
# ARGV: limit, window (ms), burst, rate (calls per ms), urgent (0/1), a unique member for this call.
# Returns {milliseconds to wait (0: taken), calls in the window}.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then return {paused - now, -1} end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {math.max(1, tonumber(oldest[2]) + window - now), used}
end
local burst, rate = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[2], 'tokens', 'at')
local tokens = math.min(burst, (tonumber(state[1]) or burst) + (now - (tonumber(state[2]) or now)) * rate)
if ARGV[5] == '0' and tokens < 1 then
  return {math.max(1, math.ceil((1 - tokens) / rate)), used}
end
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'at', now)
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return {0, used + 1}
"""

# KEYS: the window. ARGV: the call's member, window (ms). A finished call counts from its end (see
# budgets.SlidingWindow), and the window's key lives as long as that.
FINISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZADD', KEYS[1], 'XX', 'GT', 'CH', now, ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS: the window. ARGV: window (ms), then pairs of (member, age in ms): calls this process made while Redis did
# not answer, each counted from its own time (a member already there only moves later).
RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'GT', now - tonumber(ARGV[i + 1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: the pause. ARGV: milliseconds. The pause only ever moves later.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ = now + tonumber(ARGV[1])
if until_ > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], until_, 'PX', tonumber(ARGV[1]))
end
return 1
"""


class RedisBudgets:
    """The Redis side of every shared budget of this process, and whether Redis is answering."""

    def __init__(
        self, redis: Redis, *, share: int, process_id: str, timeout: float = TIMEOUT, clock: Clock = time.monotonic
    ):
        self.redis = redis
        self.share = share
        self._timeout = timeout
        self._clock = clock
        self._take = redis.register_script(TAKE)
        self._pause = redis.register_script(PAUSE)
        self._finish = redis.register_script(FINISH)
        self._record = redis.register_script(RECORD)
        self._members = (f"{process_id}:{n}" for n in itertools.count())
        self._down_until = 0.0
        self.down = False

    def usable(self) -> bool:
        return self._clock() >= self._down_until

    def retried_in(self) -> float:
        """Seconds until Redis is asked again."""
        return max(0.0, self._down_until - self._clock())

    def budget(self, key: str, limit: Limit) -> SharedBudget:
        return SharedBudget(self, key, limit, clock=self._clock)

    def member(self) -> str:
        return next(self._members)

    async def take(self, key: str, limit: Limit, urgent: bool, member: str) -> tuple[float, int]:
        window_ms = int(limit.kept_window * 1000)
        args = [limit.calls, window_ms, limit.bucket_burst, limit.bucket_rate / 1000, int(urgent), member]
        wait_ms, used = await self._call(self._take, [f"{key}:w", f"{key}:b", f"{key}:p"], args)
        return wait_ms / 1000, used

    async def finish(self, key: str, limit: Limit, member: str) -> None:
        await self._call(self._finish, [f"{key}:w"], [member, int(limit.kept_window * 1000)])

    async def record(self, key: str, limit: Limit, ages: list[tuple[str, float]]) -> None:
        """Count calls made without Redis, each `age` seconds ago."""
        pairs = [value for member, age in ages for value in (member, max(0, int(age * 1000)))]
        await self._call(self._record, [f"{key}:w"], [int(limit.kept_window * 1000), *pairs])

    async def pause(self, key: str, seconds: float) -> None:
        await self._call(self._pause, [f"{key}:p"], [max(1, int(seconds * 1000))])

    async def _call(self, script: Callable, keys: list[str], args: list) -> list:
        try:
            result = await self._answer_in_time(script(keys=keys, args=args))
        except (RedisError, OSError, TimeoutError) as error:
            self._down_until = self._clock() + RETRY_AFTER
            if not self.down:
                self.down = True
                log.warning(
                    "Redis is not answering (%s): until it does, each process keeps 1/%d of every Slack budget",
                    error.__class__.__name__,
                    self.share,
                )
            raise SharedBudgetUnavailable from error
        if self.down:
            self.down = False
            log.warning("Redis answers again: the Slack budgets are shared by every process")
        return result

    async def _answer_in_time(self, command: Awaitable[list]) -> list:
        """The command's answer, or TimeoutError after `timeout` seconds. A command given up on is not cancelled
        (redis-py would drop its connection, and a busy moment would turn into a storm of new ones): it ends on
        its own, and its answer is ignored (a call it counted in Redis counts until its window ends, or until
        the fallback's record of the same call, under the same member, replaces it)."""
        call = asyncio.ensure_future(command)
        try:
            done, _ = await asyncio.wait({call}, timeout=self._timeout)
        except BaseException:  # the caller was cancelled (a lane closing): the command ends on its own
            call.add_done_callback(_ignore_outcome)
            raise
        if not done:
            call.add_done_callback(_ignore_outcome)
            raise TimeoutError
        return call.result()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (RedisError, OSError, TimeoutError):
            return False


class SharedBudgetUnavailable(Exception):
    pass


def _ignore_outcome(call: asyncio.Future) -> None:
    if not call.cancelled():
        call.exception()  # retrieved, so that asyncio does not log it as never retrieved


class SharedBudget:
    """One Slack limit kept in Redis for every process, with this process's share of it as a fallback."""

    def __init__(self, shared: RedisBudgets, key: str, limit: Limit, *, clock: Clock = time.monotonic):
        self.limit = limit
        self._shared = shared
        self._key = key
        self._clock = clock
        self._local = Budget(limit.share(shared.share), clock)
        self._used = 0  # calls in the shared window, as of the last answer from Redis ...
        self._used_at = 0.0  # ... at this time
        self._last_take = 0.0
        self._in_flight: deque[tuple[str, bool]] = deque()  # calls taken and not finished: (member, in Redis)
        self._unshared: dict[str, float] = {}  # calls Redis has not been told of: member -> when it counts from

    async def take(self, *, urgent: bool = False) -> float:
        self._last_take = self._clock()
        member = self._shared.member()
        if self._shared.usable():
            try:
                await self._tell_redis()
                wait, used = await self._shared.take(self._key, self.limit, urgent, member)
            except SharedBudgetUnavailable:
                pass
            else:
                if used >= 0:
                    self._used, self._used_at = used, self._clock()
                if wait <= 0:
                    self._local.record()  # should Redis go, this process's fallback share knows what it spent
                    self._in_flight.append((member, True))
                return wait
        self._forget_expired_unshared()
        if self._estimated_used() + len(self._unshared) >= self.limit.calls:
            # The others may still be counting in Redis: what the window held when Redis last answered (less what
            # has left it since) is not this process's to spend, whatever its own share says.
            return self._until_asked_again(math.inf)
        wait = self._local.take_now(urgent=urgent)
        if wait <= 0:
            self._in_flight.append((member, False))
            self._unshared[member] = self._clock()
            return wait
        return self._until_asked_again(wait)

    def _until_asked_again(self, wait: float) -> float:
        """The local share's verdict holds only until Redis is asked again: a process that spent more than its share
        in the shared window would otherwise be told to wait for most of a minute (the local window, or the local
        pace deep in debt) by a Redis that was slow once."""
        return min(wait, max(self._shared.retried_in(), MIN_RECHECK))

    async def finished(self) -> None:
        self._local.finished_now()
        if not self._in_flight:
            return
        member, in_redis = self._in_flight.popleft()  # calls are interchangeable (see budgets.SlidingWindow)
        if in_redis and self._shared.usable():
            try:
                await self._shared.finish(self._key, self.limit, member)
                return
            except SharedBudgetUnavailable:
                pass
        self._unshared[member] = self._clock()  # it counts from its end, once Redis hears of it
        if self._shared.usable():
            with contextlib.suppress(SharedBudgetUnavailable):
                await self._tell_redis()

    def _forget_expired_unshared(self) -> None:
        horizon = self._clock() - self.limit.kept_window
        self._unshared = {call: at for call, at in self._unshared.items() if at > horizon}

    async def _tell_redis(self) -> None:
        """Write the calls made while Redis did not answer into the shared window."""
        if not self._unshared:
            return
        now = self._clock()
        snapshot = dict(self._unshared)
        told = [(member, now - at) for member, at in snapshot.items() if at > now - self.limit.kept_window]
        if told:
            await self._shared.record(self._key, self.limit, told)
            self._used += len(told)  # counted there now, should the next take not be answered
        for member, at in snapshot.items():
            if self._unshared.get(member) == at:  # unless it finished meanwhile: its end is still to be told
                del self._unshared[member]

    async def pause(self, seconds: float) -> None:
        self._local.pause_now(seconds)
        if self._shared.usable():
            try:
                await self._shared.pause(self._key, seconds)
            except SharedBudgetUnavailable:
                pass

    def used(self) -> int:
        return self._estimated_used() if self._shared.usable() else self._local.used()

    def _estimated_used(self) -> int:
        """The shared window's count as last seen, less what has left the window since (as if spread evenly):
        a budget nobody took from for a while must not look full for ever (no take, no newer count)."""
        elapsed = self._clock() - self._used_at
        return math.ceil(self._used * max(0.0, 1 - elapsed / self.limit.kept_window))

    def wait_time(self, *, urgent: bool = False) -> float:
        if not self._shared.usable():
            return self._local.wait_time(urgent=urgent)
        return 0.0 if self._estimated_used() < self.limit.calls else 1.0

    @property
    def idle(self) -> bool:
        self._forget_expired_unshared()
        return self._clock() - self._last_take > self.limit.kept_window and self._local.idle and not self._unshared
