"""The Home tab's answer settings (admins): "Change" opens the modal; its submission saves what it names."""

import logging

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.question import workspace_id
from bot.services import Services
from bot.surfaces.admins import is_admin
from bot.surfaces.answer_settings import (
    ADMINS_ONLY,
    EDIT_ACTION,
    MODAL_CALLBACK,
    problem_with,
    read_modal,
    settings_modal,
)
from bot.surfaces.app_home import publish_home

log = logging.getLogger(__name__)
BLOCK_OF = {"model": "model", "system_prompt": "prompt", "web_search": "web_search"}


def register(app: AsyncApp) -> None:
    app.action(EDIT_ACTION)(on_edit_settings)
    app.view(MODAL_CALLBACK)(on_settings_submitted)


async def on_edit_settings(ack: AsyncAck, body: dict, context: AsyncBoltContext) -> None:
    await ack()
    services: Services = context["services"]
    team_id = workspace_id(context.team_id, body)
    user_id = (body.get("user") or {}).get("id")
    if not user_id or not body.get("trigger_id") or not await is_admin(context.client, user_id):
        log.info("%s in %s pressed Change (answer settings) but is no admin; ignored", user_id, team_id)
        return
    await services.slack.for_team(team_id).call(
        context.client, "views.open", trigger_id=body["trigger_id"], view=settings_modal(services)
    )


async def on_settings_submitted(ack: AsyncAck, body: dict, view: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    team_id = workspace_id(context.team_id, body)
    user_id = (body.get("user") or {}).get("id")
    channel, changes = read_modal((view.get("state") or {}).get("values") or {})
    errors = {
        BLOCK_OF[setting]: problem for setting, value in changes if (problem := problem_with(services, setting, value))
    }
    if errors:
        await ack(response_action="errors", errors=errors)
        return
    if not user_id or not await is_admin(context.client, user_id):
        await ack(response_action="errors", errors={"model": ADMINS_ONLY})
        return
    await services.answer_settings.change_many(team_id, channel, changes, by=user_id)
    await ack()
    try:
        await publish_home(services, context.client, team_id, user_id)
    except Exception as error:
        log.warning(
            "could not show the new answer settings in the Home tab of %s (%s)", user_id, error.__class__.__name__
        )
