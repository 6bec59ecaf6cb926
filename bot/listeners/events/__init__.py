import logging

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.answer import answer_question
from bot.listeners.events import home, lifecycle, stopped
from bot.question import is_user_message, question_from_event, workspace_id
from bot.services import Services

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("app_mention")(on_mention)
    app.event("message")(on_message)
    home.register(app)
    lifecycle.register(app)
    stopped.register(app)


async def on_mention(body: dict, event: dict, context: AsyncBoltContext) -> None:
    if is_user_message(event):
        _hand_over(body, event, context)


async def on_message(body: dict, event: dict, context: AsyncBoltContext) -> None:
    # Channel messages reach the bot as app_mention; only direct messages are questions here.
    if event.get("channel_type") == "im" and is_user_message(event):
        _hand_over(body, event, context)


def _hand_over(body: dict, event: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    question = question_from_event(
        event,
        event_id=body.get("event_id") or f"{event.get('channel')}:{event.get('ts')}",
        team_id=workspace_id(context.team_id, body),
        bot_user_id=context.bot_user_id,
        dm_replies_in_thread=services.settings.slack_streaming != "edit",
    )
    if question is None:
        log.info("event %s names no message to answer; ignored", body.get("event_id"))
        return
    services.tasks.spawn(
        answer_question(question, context.client, services, bot_user_id=context.bot_user_id),
        name=f"answer {question.event_id}",
    )
