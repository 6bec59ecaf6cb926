"""Which bot processes are alive: each writes a heartbeat; one whose heartbeat is older than the lease is dead.

Several processes may serve the same workspaces (and a restarted one is a new process), so an answer left
half-written can only be finished by someone else once its owner is known to be dead. A process proves it
is alive by a heartbeat every `heartbeat_every` seconds; it is dead once its heartbeat is `lease` (three
heartbeats) old. Judging is done only by a process whose own heartbeats have been getting through for a
while: after a database outage every heartbeat is old, and the live processes need a heartbeat's time to
show themselves again before anyone may be declared dead.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.tables import bot_processes

log = logging.getLogger(__name__)

LEASE_HEARTBEATS = 3
JUDGE_AFTER_HEARTBEATS = 2


class ProcessRegistry:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        process_id: str,
        heartbeat_every: float,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._engine = engine
        self.process_id = process_id
        self.heartbeat_every = heartbeat_every
        self.lease = timedelta(seconds=heartbeat_every * LEASE_HEARTBEATS)
        self._clock = clock
        self._monotonic = monotonic
        self._healthy_since: float | None = None

    async def beat(self) -> bool:
        """Record that this process is alive; False (and no longer healthy) when the database did not answer."""
        now = self._clock()
        try:
            async with self._engine.begin() as connection:
                updated = await connection.execute(
                    update(bot_processes).where(bot_processes.c.id == self.process_id).values(heartbeat_at=now)
                )
                if updated.rowcount == 0:
                    await connection.execute(
                        bot_processes.insert().values(
                            id=self.process_id,
                            host=socket.gethostname()[:255],
                            pid=os.getpid(),
                            started_at=now,
                            heartbeat_at=now,
                        )
                    )
        except Exception as error:
            if self._healthy_since is not None:
                log.warning("heartbeat failed (%s); answers go on, orphans wait", error.__class__.__name__)
            self._healthy_since = None
            return False
        if self._healthy_since is None:
            self._healthy_since = self._monotonic()
        return True

    def may_judge_others(self) -> bool:
        """True once this process's own heartbeats have got through for long enough (see the module docstring)."""
        return (
            self._healthy_since is not None
            and self._monotonic() - self._healthy_since >= self.heartbeat_every * JUDGE_AFTER_HEARTBEATS
        )

    def alive_cutoff(self) -> datetime:
        """A process whose last heartbeat is older than this is dead."""
        return self._clock() - self.lease

    def alive_ids(self):
        """A subquery of the processes alive now (this one included)."""
        return select(bot_processes.c.id).where(
            (bot_processes.c.heartbeat_at >= self.alive_cutoff()) | (bot_processes.c.id == self.process_id)
        )

    async def leave(self) -> None:
        """A clean stop: this process has finished (or handed over) all its answers."""
        async with self._engine.begin() as connection:
            await connection.execute(delete(bot_processes).where(bot_processes.c.id == self.process_id))

    async def forget_dead(self, owning: set[str]) -> int:
        """Remove the rows of dead processes that own nothing any more."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(bot_processes).where(
                    bot_processes.c.heartbeat_at < self.alive_cutoff(),
                    bot_processes.c.id != self.process_id,
                    bot_processes.c.id.not_in(owning) if owning else bot_processes.c.id.is_not(None),
                )
            )
        return result.rowcount
