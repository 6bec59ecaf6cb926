"""The Home tab's spending limits (admins): "Set a limit" opens the modal; its submission saves one limit."""

import logging

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from billing import SpendingLimit
from bot.question import workspace_id
from bot.services import Services
from bot.surfaces.admins import is_admin
from bot.surfaces.app_home import publish_home
from bot.surfaces.limits import ADMINS_ONLY
from bot.surfaces.limits_modal import EDIT_ACTION, MODAL_CALLBACK, limits_modal, read_submission

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.action(EDIT_ACTION)(on_edit_limits)
    app.view(MODAL_CALLBACK)(on_limits_submitted)


async def on_edit_limits(ack: AsyncAck, body: dict, context: AsyncBoltContext) -> None:
    await ack()
    services: Services = context["services"]
    team_id = workspace_id(context.team_id, body)
    user_id = (body.get("user") or {}).get("id")
    if not user_id or not body.get("trigger_id") or not await is_admin(context.client, user_id):
        log.info("%s in %s pressed Set a limit but is no admin; ignored", user_id, team_id)
        return
    await services.slack.for_team(team_id).call(
        context.client, "views.open", trigger_id=body["trigger_id"], view=limits_modal()
    )


async def on_limits_submitted(ack: AsyncAck, body: dict, view: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    team_id = workspace_id(context.team_id, body)
    user_id = (body.get("user") or {}).get("id")
    change = read_submission((view.get("state") or {}).get("values") or {})
    if isinstance(change, dict):
        await ack(response_action="errors", errors=change)
        return
    if not user_id or not await is_admin(context.client, user_id):
        await ack(response_action="errors", errors={"amount": ADMINS_ONLY})
        return
    if change.amount is None:
        await services.credits.remove_limit(team_id, change.scope, change.subject)
    else:
        credits, period = change.amount
        await services.credits.set_limit(
            team_id, SpendingLimit(change.scope, change.subject, credits, period, set_by=user_id)
        )
    await ack()
    try:
        await publish_home(services, context.client, team_id, user_id)
    except Exception as error:
        log.warning("could not show the new limits in the Home tab of %s (%s)", user_id, error.__class__.__name__)
