"""Slack's own Stop, under a native stream's agent session: stop the answers being written in that thread."""

import logging

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.question import workspace_id
from bot.services import Services

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("agent_session_stopped")(on_agent_session_stopped)


async def on_agent_session_stopped(body: dict, event: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    channel, thread_ts, user = event.get("channel"), event.get("thread_ts"), event.get("user")
    if not (isinstance(channel, str) and isinstance(thread_ts, str)):
        return
    stopped = await services.stops.stop_thread(
        workspace_id(context.team_id, body), channel, thread_ts, by=user if isinstance(user, str) else ""
    )
    log.info("agent session in %s/%s stopped by %s: %d answers asked to stop", channel, thread_ts, user, stopped)
