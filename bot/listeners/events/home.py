"""The app's two tabs: the Home tab, published each time someone opens it; the Messages tab, where a few
suggested prompts show how to start."""

import logging

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError

from bot.question import workspace_id
from bot.services import Services
from bot.slack_errors import slack_error
from bot.surfaces.app_home import SUGGESTED_PROMPTS, publish_home

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_home_opened)


async def on_home_opened(body: dict, event: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    user, tab, channel = event.get("user"), event.get("tab", "home"), event.get("channel")
    if not isinstance(user, str) or not user:
        return
    team_id = workspace_id(context.team_id, body)
    try:
        if tab == "home":
            await publish_home(services, context.client, team_id, user)
        elif tab == "messages" and isinstance(channel, str) and channel:
            await services.slack.for_team(team_id).call(
                context.client,
                "assistant.threads.setSuggestedPrompts",
                channel_id=channel,
                title="Ask me anything",
                prompts=SUGGESTED_PROMPTS,
            )
    except SlackApiError as error:
        log.warning("could not set up the %s tab of %s (%s)", tab, user, slack_error(error))
