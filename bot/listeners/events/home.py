"""The Home tab, published each time someone opens it."""

import logging

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.app_home import publish_home
from bot.question import workspace_id

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_home_opened)


async def on_home_opened(body: dict, event: dict, context: AsyncBoltContext) -> None:
    if event.get("tab", "home") != "home":
        return  # the Messages tab
    await publish_home(context["services"], context.client, workspace_id(context.team_id, body), event["user"])
