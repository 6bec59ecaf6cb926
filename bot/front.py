"""The HTTP endpoints on a thread of their own: Slack's requests are read, verified and acknowledged there,
whatever the main event loop is busy with.

Slack wants each event acknowledged within 3 s, and a burst of questions is exactly when the main loop is
busiest: in `python -m bench --scenarios 500/100` it runs hundreds of answers at once, and a mention served by
it waited for the loop's turn, 27 ms in the median and up to 55-100 ms (p99), before a handler that took
0.2 ms. Here the server has a loop of its own that only reads requests, checks them and acknowledges events.
Every other handler runs on the main loop, where the services live (their connections and tasks belong to
it), after the front has read the request's body (the request's stream is the front loop's).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answered_on_front(handler: Handler) -> Handler:
    """Marks a handler that runs on the front's loop (it must not touch the services, only hand work over)."""
    handler.answered_on_front = True  # type: ignore[attr-defined]
    return handler


async def on_loop(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T]) -> T:
    """`work` run on `loop` (another thread's), its result awaited here; cancelling this cancels it there."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, loop))


def handlers_on(main: asyncio.AbstractEventLoop):
    """Middleware that runs each handler on `main`, but those marked `answered_on_front`."""

    @web.middleware
    async def on_main_loop(request: web.Request, handler: Handler) -> web.StreamResponse:
        if getattr(request.match_info.handler, "answered_on_front", False):
            return await handler(request)
        try:
            await request.read()  # read here: later reads return these bytes
        except ConnectionError:
            return web.Response(status=400, text="incomplete body")
        return await on_loop(main, handler(request))  # type: ignore[arg-type]

    return on_main_loop


class Front:
    """`app` served on `listening` by a loop on a thread of its own; the app's handlers that need the main loop
    get there through `handlers_on`."""

    def __init__(self, app: web.Application, listening: socket.socket) -> None:
        self.runner = web.AppRunner(app, access_log=None)
        self._listening = listening
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http front", daemon=True)

    async def start(self) -> None:
        self._thread.start()
        try:
            await on_loop(self._loop, self._serve())
        except BaseException:
            with contextlib.suppress(Exception):  # the failure to start is what the caller must see
                await self.stop()
            raise

    async def _serve(self) -> None:
        await self.runner.setup()
        await web.SockSite(self.runner, self._listening).start()

    async def shutdown(self) -> None:
        """The app's shutdown hooks (requests are still taken until `stop`)."""
        await on_loop(self._loop, self.runner.shutdown())

    async def stop(self) -> None:
        """No more requests: those in progress are finished, then the thread ends."""
        if self._thread.is_alive():
            try:
                await on_loop(self._loop, self.runner.cleanup())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                await asyncio.to_thread(self._thread.join)
        self._loop.close()
