"""One bot process: the HTTP endpoints, the optional Socket Mode connection, and periodic upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from sqlalchemy import text

from billing import stripe_off_reason, stripe_routes
from bot.app import build_bolt_app
from bot.front import Front, answered_on_front, handlers_on, on_loop
from bot.inbound import Refused, SlackRequestGate
from bot.logs import log_context
from bot.metrics import LIVE_STATE, metrics_route, watch_event_loop
from bot.recovery import recover
from bot.services import EVENT_CLAIM_RETENTION, Services, build_services, utc_now
from bot.startup import StartupError, confirm_slack_token, reach_database, summary
from config import Settings
from storage import is_transient

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 20.0


class MalformedHttpFilter(logging.Filter):
    """aiohttp answers a request it cannot parse (a duplicate Content-Length, an 8 KB header) with 400 and logs
    a traceback at ERROR. It is somebody else's malformed request, not our fault: one line at WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg, record.args = (
                "refused a malformed HTTP request (%s)",
                (error.message or error.__class__.__name__,),
            )
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
        return True


_MALFORMED_HTTP_FILTER = MalformedHttpFilter()


async def _dispatch_event(bolt: AsyncApp, request: AsyncBoltRequest) -> None:
    log_context(event_id=request.body.get("event_id"), team_id=request.body.get("team_id"))
    response = await bolt.async_dispatch(request)
    if response.status >= 400:
        log.info("event %s not handled (%d: %s)", request.body.get("event_id"), response.status, response.body[:200])


async def _bolt_response(bolt: AsyncApp, request: AsyncBoltRequest) -> web.Response:
    return await to_aiohttp_response(await bolt.async_dispatch(request))


def build_web_app(services: Services, bolt: AsyncApp) -> web.Application:
    """The endpoints, to be served by bot.front.Front: /slack/events on the front's own loop, the rest (and
    what the events ask for) on this one."""
    logging.getLogger("aiohttp.server").addFilter(_MALFORMED_HTTP_FILTER)  # the same filter: added once
    gate = SlackRequestGate(services.settings.slack_signing_secret)
    main = asyncio.get_running_loop()

    def dispatch(admitted: AsyncBoltRequest) -> None:
        services.tasks.spawn(_dispatch_event(bolt, admitted), name=f"event {admitted.body.get('event_id')}")

    @answered_on_front
    async def slack_events(request: web.Request) -> web.Response:
        try:
            admitted = await gate.admit(request)
        except Refused as refused:
            log.info("refused a request to /slack/events (%s)", refused.reason)
            return refused.response()
        if admitted.body.get("type") == "event_callback":
            # Slack wants only a 200 for an event, within 3 s: it gets it now, before the workspace's token is
            # looked up (a burst of questions must not wait for the database to be acknowledged).
            main.call_soon_threadsafe(dispatch, admitted)
            return web.Response(status=200)
        return await on_loop(main, _bolt_response(bolt, admitted))

    async def healthz(_request: web.Request) -> web.Response:
        """200 while the database answers; Redis is reported but never fails the check (the bot works without it)."""
        redis = "unused" if services.redis is None else ("ok" if await services.redis.ping() else "unavailable")
        try:
            async with asyncio.timeout(2):
                async with services.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as error:
            log.warning("health check: database not answering (%s)", error.__class__.__name__)
            return web.json_response({"ok": False, "database": "unavailable", "redis": redis}, status=503)
        return web.json_response({"ok": True, "database": "ok", "redis": redis})

    app = web.Application(middlewares=[handlers_on(main)])
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_routes([metrics_route(services.settings.metrics_token)])
    LIVE_STATE.watch(services)
    if bolt.oauth_flow is not None:
        app.add_routes(oauth_routes(bolt))
    app.add_routes(stripe_routes(services.stripe_webhook))
    return app


def oauth_routes(bolt: AsyncApp) -> list[web.RouteDef]:
    """OAuth mode: the "Add to Slack" page and the redirect that completes an install (Bolt checks the state)."""
    flow = bolt.oauth_flow
    assert flow is not None  # OAuth mode

    async def install(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await flow.handle_installation(await to_bolt_request(request)))

    async def oauth_redirect(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await flow.handle_callback(await to_bolt_request(request)))

    return [web.get(flow.install_path, install), web.get(flow.redirect_uri_path, oauth_redirect)]


async def tidy(services: Services) -> None:
    """One pass of upkeep: release holds nobody answers for any more, and forget what no longer matters."""
    released = await services.credits.sweep_expired(keep=await services.journal.reservations())
    if released:
        log.warning("released %d expired credit reservations", released)
    await services.processes.forget_dead(owning=await services.journal.owners())
    await services.events.forget_older_than(EVENT_CLAIM_RETENTION)
    retention = timedelta(days=services.settings.history_retention_days)
    purged = await services.history.purge_older_than(retention)
    if purged:
        log.info("deleted %d conversation turns older than %d days", purged, retention.days)
    if services.installs is not None:
        await services.installs.states.purge_expired()
    if services.stripe_webhook is not None:
        await services.stripe_webhook.prune_events()


async def upkeep(services: Services) -> None:
    """tidy() at start, then every SWEEP_INTERVAL_SECONDS."""
    while True:
        try:
            await tidy(services)
        except Exception as error:
            log.warning(
                "periodic upkeep failed (%s); trying again later",
                error.__class__.__name__,
                exc_info=not is_transient(error),
            )
        await asyncio.sleep(services.settings.sweep_interval_seconds)


async def heartbeat(services: Services) -> None:
    """Prove this process alive, keep the holds of its answers, and finish answers nobody works on."""
    while True:
        if await services.processes.beat():
            try:
                await services.credits.renew(services.journal.held())
                await recover(services)
            except Exception as error:
                log.warning(
                    "recovering interrupted answers failed (%s); trying again later",
                    error.__class__.__name__,
                    exc_info=not is_transient(error),
                )
        services.slack.prune()
        await asyncio.sleep(services.processes.heartbeat_every)


@dataclass
class RunningBot:
    services: Services
    bolt: AsyncApp
    front: Front
    port: int
    background: list[asyncio.Task] = field(default_factory=list)
    socket_mode: AsyncSocketModeHandler | None = None

    async def stop(self) -> None:
        """Stop taking requests, let answers in progress finish (or wrap them up), then close."""
        await self.front.shutdown()
        if self.socket_mode is not None:
            await self.socket_mode.close_async()
        # Upkeep first (it may be inside a transaction: let it unwind), so that no recovery starts while answers drain.
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.services.tasks.drain(DRAIN_TIMEOUT)
        try:
            await self.services.processes.leave()  # what is left unfinished is for the next process to finish
        except Exception as error:
            log.warning(
                "could not sign off this process (%s); its answers are finished once its lease ends",
                error.__class__.__name__,
            )
        await self.front.stop()
        await self.services.close()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, taken first: a port in use is one line, before the database is touched."""
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} is in use (PORT): another process listens there") from None
        raise StartupError(f"cannot listen on port {port} (PORT): {error.strerror or error}") from None


async def start_bot(settings: Settings, *, clock=utc_now, host: str = "0.0.0.0", port: int | None = None) -> RunningBot:
    """The database reached and migrated, the token confirmed, the endpoints listening; StartupError (one line
    per problem) otherwise, with everything opened so far closed again."""
    async with contextlib.AsyncExitStack() as opened:
        listening = opened.enter_context(listen(host, settings.port if port is None else port))  # before any change
        engine = await reach_database(settings)
        opened.push_async_callback(engine.dispose)
        services = build_services(settings, engine, clock=clock)
        opened.push_async_callback(services.close)
        identity = await confirm_slack_token(settings, services.slack_web_client(settings.slack_bot_token))
        await services.processes.beat()  # before any answer is recorded as this process's
        if services.installs is not None:
            log.info("%d installs known", await services.installs.store.warm())
        bolt = build_bolt_app(services)
        front = Front(build_web_app(services, bolt), listening)
        await front.start()
        opened.push_async_callback(front.stop)
        bound_port = listening.getsockname()[1]
        running = RunningBot(services, bolt, front, bound_port)
        loop = asyncio.get_running_loop()
        running.background.append(loop.create_task(heartbeat(services), name="heartbeat"))
        running.background.append(loop.create_task(upkeep(services), name="upkeep"))
        running.background.append(loop.create_task(watch_event_loop(), name="event loop lag"))
        if settings.slack_app_token:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            running.socket_mode = AsyncSocketModeHandler(bolt, settings.slack_app_token)
            # slack_sdk retries a failed connection forever; the HTTP endpoints must not wait for it.
            running.background.append(loop.create_task(running.socket_mode.connect_async(), name="socket-mode"))
        log.info("%s", summary(settings, port=bound_port, identity=identity))
        if (reason := stripe_off_reason(settings)) not in (None, "not configured"):
            log.warning("top-ups are off: %s", reason)
        opened.pop_all()
    return running


def steady_heap() -> None:
    """Hides what lives as long as the process (modules, the app, the settings: some 260,000 objects) from
    the garbage collector: every full collection would otherwise walk them all, a pause of the event loop of
    about 200 ms, and a burst of questions, which allocates fast, triggers one."""
    gc.collect()
    gc.freeze()


async def serve_forever(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before starting: a stop asked during the start is kept
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    running = await start_bot(settings)
    steady_heap()
    await stop.wait()
    log.info("stopping: finishing answers in progress")
    await running.stop()
