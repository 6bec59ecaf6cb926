"""Short transactions that come in bursts (the claim of every question): a bounded number at once, in turn, each
on a connection that the transaction before it may hand over without giving it back to the pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class ShortTransactions:
    """At most `width` transactions at once; the others wait their turn in order of arrival.

    On PostgreSQL every checkout from the pool first pings the connection (pool_pre_ping: a BEGIN, a query and a
    ROLLBACK, three round trips before a claim's own handful). A connection that has just committed is known to be
    alive, so while others wait it goes straight to the next transaction, and back to the pool once nobody does.
    With `hand_over=False` (SQLite, whose one connection is every writer's) it goes back after each transaction:
    the rest of the bot is not kept waiting behind a burst. A handed-over connection skips the pool's reset, so a
    transaction here must leave the connection as it found it (no execution options, SET or `info` of its own)."""

    def __init__(self, engine: AsyncEngine, width: int, *, hand_over: bool):
        self._engine = engine
        self._free_turns = width
        self._hand_over = hand_over
        # Each waiter is given a turn with the connection of the transaction before it, or None: take one.
        self._waiters: deque[asyncio.Future[AsyncConnection | None]] = deque()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        connection = await self._turn()
        committed = False
        try:
            if connection is None:
                connection = await self._engine.connect()
            async with connection.begin():
                yield connection
            committed = True
        finally:
            await self._pass_on(connection, reusable=committed)

    async def _turn(self) -> AsyncConnection | None:
        if self._free_turns > 0:
            self._free_turns -= 1
            return None
        waiter: asyncio.Future[AsyncConnection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # given its turn just as it was cancelled: it goes on
                with contextlib.suppress(Exception):  # a connection that fails to close: the caller sees the cancel
                    await self._pass_on(waiter.result(), reusable=True)
            raise

    async def _pass_on(self, connection: AsyncConnection | None, *, reusable: bool) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while waiting
                continue
            if reusable and self._hand_over and connection is not None:
                waiter.set_result(connection)
                return
            waiter.set_result(None)
            break
        else:
            self._free_turns += 1
        if connection is not None:
            await connection.close()  # back to the pool
