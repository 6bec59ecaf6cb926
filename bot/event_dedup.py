"""Slack retries a delivery it thinks was lost; each event must still be answered once, even across restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.tables import slack_events


class EventLog:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]):
        self._engine = engine
        self._clock = clock
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert

    async def claim(self, connection: AsyncConnection, event_id: str, team_id: str) -> bool:
        """True for the first delivery of `event_id`, False for every repeat (inside the caller's transaction)."""
        statement = (
            self._insert(slack_events)
            .values(event_id=event_id, team_id=team_id, received_at=self._clock())
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
        return (await connection.execute(statement)).rowcount == 1

    async def forget_older_than(self, age: timedelta) -> int:
        """Slack stops retrying after minutes; old claims only take space."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(slack_events).where(slack_events.c.received_at < self._clock() - age)
            )
        return result.rowcount
