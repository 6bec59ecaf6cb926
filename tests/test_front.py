"""bot/front.py: the server's own thread answers the handlers marked for it; every other handler runs on the
loop that built the app, with the body the front read."""

from __future__ import annotations

import asyncio
import socket
import threading

import aiohttp
from aiohttp import web

from bot.front import Front, answered_on_front, handlers_on


async def test_marked_handlers_run_on_the_front_thread_and_the_others_on_the_main_loop_with_their_body():
    main = asyncio.get_running_loop()
    seen: dict[str, tuple[int, asyncio.AbstractEventLoop, bytes]] = {}

    @answered_on_front
    async def front(request: web.Request) -> web.Response:
        seen["front"] = (threading.get_ident(), asyncio.get_running_loop(), await request.read())
        return web.Response(text="front")

    async def main_handler(request: web.Request) -> web.Response:
        seen["main"] = (threading.get_ident(), asyncio.get_running_loop(), await request.read())
        return web.Response(text="main")

    app = web.Application(middlewares=[handlers_on(main)])
    app.router.add_post("/front", front)
    app.router.add_post("/main", main_handler)
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    served = Front(app, listening)
    await served.start()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("front", "main"):
                async with http.post(f"http://127.0.0.1:{port}/{path}", data=f"body of {path}".encode()) as response:
                    assert (response.status, await response.text()) == (200, path)
    finally:
        await served.stop()
    assert seen["main"] == (threading.get_ident(), main, b"body of main")
    front_thread, front_loop, front_body = seen["front"]
    assert front_thread != threading.get_ident() and front_loop is not main and front_body == b"body of front"
    assert not any(thread.name == "http front" for thread in threading.enumerate()), "stop ends the thread"
