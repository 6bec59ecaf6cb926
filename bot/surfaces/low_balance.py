"""A workspace's credits ran low: besides the notice under the answer that crossed the threshold, one DM to
each admin who bought credits or set limits (once per crossing: a top-up above the threshold re-arms it)."""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot import user_messages as say
from bot.services import Services
from bot.surfaces.admins import is_admin

log = logging.getLogger(__name__)


async def tell_billing_admins(services: Services, client: AsyncWebClient, team_id: str, balance: int) -> None:
    scheduler = services.slack.for_team(team_id)
    for user_id in await services.credits.billing_contacts(team_id):
        if not await is_admin(client, user_id):
            continue  # a member who once bought credits is not the one to decide about money now
        try:
            await scheduler.direct_message(
                client, user_id, text=say.low_balance_dm(balance, services.settings.low_balance_threshold)
            )
        except Exception as error:
            log.warning("could not tell %s in %s that credits are low (%s)", user_id, team_id, error.__class__.__name__)
