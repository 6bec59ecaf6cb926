"""The Home tab, published each time someone opens it."""

import logging

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.app_home import publish_home
from bot.delivery.scheduler import slack_error
from bot.question import workspace_id

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_home_opened)


async def on_home_opened(body: dict, event: dict, context: AsyncBoltContext) -> None:
    user = event.get("user")
    if event.get("tab", "home") != "home" or not isinstance(user, str) or not user:
        return  # the Messages tab (or nobody to show it to)
    try:
        await publish_home(context["services"], context.client, workspace_id(context.team_id, body), user)
    except SlackApiError as error:
        log.warning("could not publish the Home tab of %s (%s)", user, slack_error(error))
