"""slack_sdk's SQLAlchemy installation store, with each workspace's bot kept in memory for a short while.

Bolt looks the bot up for every request (OAuth mode), and a burst of mentions would otherwise queue a
database read in front of each of them. Every bot is read at start (`warm`) and kept; once `ttl` seconds
old, the next request reads it again in the background and is answered with the kept one meanwhile, so a
change made by another process (an uninstall, a reinstall, a refreshed token) is seen within `ttl` and one
lookup. This process's own changes drop its entries at once. A bot whose rotating token is due for refresh soon is
never kept: the refresh must see the stored one, not an older copy another process has replaced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore, SQLAlchemyInstallationStore
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

TTL_SECONDS = 30.0

log = logging.getLogger(__name__)

Key = tuple[str | None, str | None, bool]


class CachedInstallationStore(AsyncSQLAlchemyInstallationStore):
    def __init__(
        self,
        *args: Any,
        reader: AsyncEngine | None = None,
        ttl: float = TTL_SECONDS,
        refresh_minutes: int = 120,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        # Lookups through the reader (storage.create_reader), when there is one: they don't wait for writers.
        self._reader = reader
        self._finder = AsyncSQLAlchemyInstallationStore(*args, **{**kwargs, "engine": reader}) if reader else None
        self._ttl = ttl
        self._refresh_seconds = refresh_minutes * 60
        self._clock = clock
        self._wall_clock = wall_clock
        self._bots: dict[Key, tuple[Bot, float]] = {}
        self._finding: dict[Key, asyncio.Future] = {}
        self._generation = 0  # changed by every change of ours: a lookup begun before it is not kept

    async def async_find_bot(
        self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False
    ) -> Bot | None:
        if is_enterprise_install or team_id is None:
            team_id = None  # as the stock store reads it: an org-wide install has no workspace
        key = (enterprise_id, team_id, bool(is_enterprise_install))
        kept = self._bots.get(key)
        if kept is not None:
            if self._clock() - kept[1] >= self._ttl:
                self._lookup(key)  # read again for the next request; this one needs no wait for it
            return kept[0]
        return await asyncio.shield(self._lookup(key))

    def _lookup(self, key: Key) -> asyncio.Future:
        """One lookup per workspace at a time: a burst of its requests waits for the same one."""
        finding = self._finding.get(key)
        if finding is None:
            finding = self._finding[key] = asyncio.ensure_future(self._find(key))
            finding.add_done_callback(
                lambda done: self._finding.pop(key, None) if self._finding.get(key) is done else None
            )
            finding.add_done_callback(_log_failure)
        return finding

    async def warm(self, limit: int = 10_000) -> int:
        """Keeps the newest bots of up to `limit` installs, read in one query (at start: the first burst of
        questions then waits for no lookup)."""
        c = self.bots.c
        query = (
            select(self.bots)
            .where(c.client_id == self.client_id, c.bot_token.is_not(None))
            .order_by(c.installed_at.desc())
            .limit(limit)
        )
        async with (self._reader or self.engine).connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        now = self._clock()
        for row in reversed(rows):  # the newest last: it wins
            bot = SQLAlchemyInstallationStore.build_bot_entity(row)
            key = (
                bot.enterprise_id,
                None if bot.is_enterprise_install else bot.team_id,
                bool(bot.is_enterprise_install),
            )
            if self._may_keep(bot):
                self._bots[key] = (bot, now)
        return len(self._bots)

    async def _find(self, key: Key) -> Bot | None:
        enterprise_id, team_id, is_enterprise_install = key
        generation = self._generation
        find_bot = self._finder.async_find_bot if self._finder else super().async_find_bot
        bot = await find_bot(enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=is_enterprise_install)
        if bot is not None and self._may_keep(bot) and generation == self._generation:  # no change of ours meanwhile
            self._bots[key] = (bot, self._clock())
        else:
            self._bots.pop(key, None)
        if len(self._bots) > 10_000:  # bounded: forget the oldest half
            for old in sorted(self._bots, key=lambda k: self._bots[k][1])[:5_000]:
                del self._bots[old]
        return bot

    def _may_keep(self, bot: Bot) -> bool:
        if not bot.bot_refresh_token or bot.bot_token_expires_at is None:
            return True
        return bot.bot_token_expires_at - self._wall_clock() > self._refresh_seconds + self._ttl

    def forget(self, enterprise_id: str | None = None, team_id: str | None = None) -> None:
        self._generation += 1
        self._finding.clear()
        for key in [
            k
            for k in self._bots
            if (enterprise_id is None or k[0] == enterprise_id) and (team_id is None or k[1] == team_id)
        ]:
            del self._bots[key]

    async def async_save(self, installation: Installation) -> None:
        self.forget(installation.enterprise_id, installation.team_id)
        await super().async_save(installation)

    async def async_save_bot(self, bot: Bot) -> None:
        self.forget(bot.enterprise_id, bot.team_id)
        await super().async_save_bot(bot)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        self.forget(enterprise_id, team_id)
        await super().async_delete_bot(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        self.forget(enterprise_id, team_id)
        await super().async_delete_installation(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id)

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        self.forget(enterprise_id, team_id)
        await super().async_delete_all(enterprise_id=enterprise_id, team_id=team_id)


def _log_failure(lookup: asyncio.Future) -> None:
    if not lookup.cancelled() and lookup.exception() is not None:
        log.warning("could not look up a workspace's bot (%s)", lookup.exception().__class__.__name__)
