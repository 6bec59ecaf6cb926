"""What a new install gets: the workspace's free credits (once ever) and a DM to the installer saying how
to use the bot. The text only mentions credits that were actually granted or are really there."""

from __future__ import annotations

import logging

from slack_sdk.oauth.installation_store import Installation

from billing import GrantResult
from bot.services import Services

log = logging.getLogger(__name__)


def credits_line(grant: GrantResult | None, free_credits: int) -> str:
    if grant is None:  # an org-wide install: each workspace gets its trial on its first question
        if free_credits > 0:
            return f"Each workspace of your organization that is new to me starts with {free_credits:,} free credits."
        return "Each workspace has its own credits."
    if grant.applied:
        return f"This workspace starts with *{free_credits:,} free credits*."
    if grant.balance > 0:
        return f"Welcome back: this workspace still has *{grant.balance:,} credits*."
    return "This workspace has no credits yet: buy a pack with `/credits` to get started."


def welcome_text(bot_user_id: str | None, team_name: str | None, grant: GrantResult | None, free_credits: int) -> str:
    bot = f"<@{bot_user_id}>" if bot_user_id else "me"
    where = f" to *{team_name}*" if team_name else ""
    return "\n".join(
        [
            f"👋 Thanks for adding me{where}! I'm Claude, and I answer questions right here in Slack.",
            f"• *Ask in a channel:* invite me, then mention {bot} with your question; I answer in the thread,"
            " and follow-ups in that thread continue the conversation.",
            "• *Ask privately:* send me a direct message, like this one.",
            f"• *Credits:* every answer is paid from the workspace's credits. {credits_line(grant, free_credits)}",
            "• `/credits` shows the balance and usage and sells top-ups; my *Home* tab shows the same.",
        ]
    )


async def welcome_installer(services: Services, installation: Installation) -> None:
    """Runs once the install is stored. A re-install grants nothing (the ledger's unique key)."""
    grant = None
    if installation.team_id and not installation.is_enterprise_install:
        grant = await services.credits.grant_free_credits(installation.team_id)
    log.info(
        "installed in team %s (enterprise %s) by %s",
        installation.team_id,
        installation.enterprise_id,
        installation.user_id,
    )
    if not installation.bot_token or not installation.user_id:
        return
    text = welcome_text(installation.bot_user_id, installation.team_name, grant, services.settings.free_credits)
    client = services.slack_web_client(installation.bot_token)
    scheduler = services.slack.for_team(installation.team_id or installation.enterprise_id or "")
    await scheduler.direct_message(
        client,
        installation.user_id,
        text=text.splitlines()[0],
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    )
