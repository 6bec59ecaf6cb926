"""`python -m bench.bot_process STATUS_FILE`: the bot as operators run it, in a process of its own (its settings
from the environment), measured from inside: event-loop lag, CPU time and memory.

The benchmark's fakes run in the benchmark's process; the bot must not share a CPU-bound event loop with
them, or every figure would be the fakes' as much as the bot's. The status file says how many answers are
still being worked on (so the benchmark knows when the run is over) and, after SIGTERM, what was measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from bench.measure import CpuClock, LoopProbe, rss_bytes
from bot import server
from bot.server import start_bot
from config import load_settings


def write(path: Path, status: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(status))
    temporary.replace(path)


def handling_times(durations: list[float]):
    """How long the bot took over each Slack request, from its arrival to the response (the client's figure
    also holds the benchmark's own delays)."""
    from aiohttp import web

    original = server.build_web_app

    def build(*args, **kwargs):
        app = original(*args, **kwargs)

        @web.middleware
        async def timed(request, handler):
            started = time.monotonic()
            try:
                return await handler(request)
            finally:
                if request.path == "/slack/events":
                    durations.append(time.monotonic() - started)

        app.middlewares.append(timed)
        return app

    server.build_web_app = build


async def main(status_path: Path) -> None:
    durations: list[float] = []
    handling_times(durations)
    settings = load_settings()
    bot = await start_bot(settings, host="127.0.0.1", port=settings.port)
    server.steady_heap()  # as serve_forever does
    probe, cpu, rss_before = LoopProbe(), CpuClock(), rss_bytes()
    probe.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    while not stopping.is_set():
        write(status_path, {"port": bot.port, "tasks": len(bot.services.tasks)})
        try:
            await asyncio.wait_for(stopping.wait(), 0.1)
        except TimeoutError:
            pass
    await probe.stop()
    write(
        status_path,
        {
            "port": bot.port,
            "tasks": len(bot.services.tasks),
            "loop_lags": probe.lags,
            "cpu_seconds": cpu.seconds(),
            "handling": durations,
            "rss_growth": max(0, probe.peak_rss - rss_before),
            "done": True,
        },
    )
    await bot.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
    os._exit(0)
