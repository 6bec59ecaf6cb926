"""The buttons under an answer: Stop (while it is written, on the edit path) and the feedback buttons."""

import logging

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot import user_messages as say
from bot.question import workspace_id
from bot.services import Services
from bot.surfaces.admins import is_admin
from bot.surfaces.answer_controls import FEEDBACK_ACTION, STOP_ACTION, answer_of_feedback

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.action(STOP_ACTION)(on_stop)
    app.action(FEEDBACK_ACTION)(on_feedback)


def _clicker(body: dict) -> str | None:
    user = body.get("user")
    return user.get("id") if isinstance(user, dict) else None


async def _tell(respond: AsyncRespond, text: str) -> None:
    try:
        await respond(response_type="ephemeral", replace_original=False, text=text)
    except Exception as error:  # no response_url (or it expired): nothing else to say it with
        log.info("could not answer a button click (%s)", error.__class__.__name__)


async def on_stop(ack: AsyncAck, respond: AsyncRespond, body: dict, action: dict, context: AsyncBoltContext) -> None:
    """Only the asker, or a workspace admin, may stop an answer; anyone else is told so, privately."""
    await ack()
    services: Services = context["services"]
    user, answer_id = _clicker(body), action.get("value")
    if not user or not answer_id:
        return
    asker = await services.stops.asker_of(answer_id)
    if asker is None:
        await _tell(respond, say.ALREADY_FINISHED)
        return
    if user != asker and not await is_admin(context.client, user):
        await _tell(respond, say.only_the_asker_can_stop(asker))
        return
    if not await services.stops.stop(answer_id, by=user):
        await _tell(respond, say.ALREADY_FINISHED)


async def on_feedback(
    ack: AsyncAck, respond: AsyncRespond, body: dict, action: dict, context: AsyncBoltContext
) -> None:
    await ack()
    services: Services = context["services"]
    user, rating, answer_id = _clicker(body), action.get("value"), answer_of_feedback(action.get("block_id"))
    if not user or answer_id is None or rating not in ("good", "bad"):
        return
    container = body.get("container") or {}
    await services.feedback.record(
        team_id=workspace_id(context.team_id, body),
        answer_id=answer_id,
        user_id=user,
        rating=rating,
        channel_id=container.get("channel_id"),
        message_ts=container.get("message_ts"),
    )
    await _tell(respond, say.FEEDBACK_THANKS)
