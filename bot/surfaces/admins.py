"""Who is a workspace admin (admins and owners, as users.info says): they may buy credits when only admins
may, stop anyone's answer, and (later) set limits."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_errors import slack_error

log = logging.getLogger(__name__)


async def is_admin(client: AsyncWebClient, user_id: str) -> bool:
    """False when Slack will not say (a refusal counts as no)."""
    try:
        user = (await client.users_info(user=user_id))["user"]
    except SlackApiError as error:
        log.warning("users.info for %s failed (%s); treating them as no admin", user_id, slack_error(error))
        return False
    except Exception as error:
        log.warning("users.info for %s failed (%s); treating them as no admin", user_id, error.__class__.__name__)
        return False
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
