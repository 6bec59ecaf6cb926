"""A workspace leaves: its installation and its stored conversations go; its credit ledger stays (it is a
financial record), so the balance is there again if the workspace comes back."""

import logging

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.question import workspace_id
from bot.services import Services

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.event("app_uninstalled")(on_app_uninstalled)
    app.event("tokens_revoked")(on_tokens_revoked)


async def on_app_uninstalled(body: dict, context: AsyncBoltContext) -> None:
    await _forget_workspace(body, context)


async def on_tokens_revoked(body: dict, event: dict, context: AsyncBoltContext) -> None:
    tokens = event["tokens"] if isinstance(event.get("tokens"), dict) else {}
    if tokens.get("bot"):
        await _forget_workspace(body, context)  # without its bot token the app is gone from the workspace
    elif isinstance(tokens.get("oauth"), list) and context["services"].installs is not None:
        await context["services"].installs.forget_user_tokens(
            enterprise_id=context.enterprise_id,
            team_id=context.team_id,
            user_ids=[user for user in tokens["oauth"] if isinstance(user, str)],
        )


async def _forget_workspace(body: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    org_wide = bool(context.is_enterprise_install)
    teams = [] if org_wide else [workspace_id(context.team_id, body)]
    if services.installs is not None:
        teams = await services.installs.forget(
            enterprise_id=context.enterprise_id, team_id=None if org_wide else teams[0], org_wide=org_wide
        )
    for team_id in teams:
        forgotten = await services.history.forget_team(team_id)
        log.info("team %s left: installation removed, %d stored conversation turns deleted", team_id, forgotten)
