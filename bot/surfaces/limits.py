"""`/credits limit …` and `/credits limits`: workspace admins cap what a person or a channel may spend.

/credits limit @user 200/day        a person's own limit (replaces the default for them)
/credits limit #channel 1000/month  a channel's limit (applies on top of people's)
/credits limit default 300/month    everyone without a limit of their own
/credits limit @user off            remove a limit
/credits limits                     list them, with what each has used this period

The command's text arrives escaped (manifest: should_escape), so people and channels come as
<@U…|name> and <#C…|name>. Periods are calendar days and months in UTC.
"""

from __future__ import annotations

import re

from slack_sdk.web.async_client import AsyncWebClient

from billing import SpendingLimit
from bot import user_messages as say
from bot.services import Services
from bot.surfaces.admins import is_admin

USAGE = (
    "Limits: `/credits limit @person 200/day`, `/credits limit #channel 1000/month`, "
    "`/credits limit default 300/month` (everyone without their own), `/credits limit @person off`, "
    "and `/credits limits` to list them. Days and months are calendar days and months in UTC."
)
ADMINS_ONLY = "Only workspace admins and owners can see or change spending limits."

_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_CHANNEL = re.compile(r"^<#([CGD][A-Z0-9]+)(?:\|[^>]*)?>$")
_AMOUNT = re.compile(r"^(\d[\d,]*)/(day|month)$")


def parse_subject(word: str) -> tuple[str, str] | None:
    if word.lower() == "default":
        return "default", ""
    if match := _USER.match(word):
        return "user", match.group(1)
    if match := _CHANNEL.match(word):
        return "channel", match.group(1)
    return None


def parse_amount(word: str) -> tuple[int, str] | None:
    match = _AMOUNT.match(word.lower())
    return (int(match.group(1).replace(",", "")), match.group(2)) if match else None


async def limit_command(services: Services, client: AsyncWebClient, team_id: str, user_id: str, args: list[str]) -> str:
    """The reply to `/credits limit SUBJECT AMOUNT/PERIOD|off`."""
    if not await is_admin(client, user_id):
        return ADMINS_ONLY
    subject = parse_subject(args[0]) if len(args) == 2 else None
    if subject is None:
        return f"I didn't understand that. {USAGE}"
    scope, who = subject
    if args[1].lower() == "off":
        removed = await services.credits.remove_limit(team_id, scope, who)
        subject_name = say.limit_subject(scope, who)
        return f"Removed the limit of {subject_name}." if removed else f"{subject_name} had no limit."
    amount = parse_amount(args[1])
    if amount is None:
        return f"I didn't understand `{args[1]}`: write it like `200/day` or `1000/month`. {USAGE}"
    credits, period = amount
    await services.credits.set_limit(team_id, SpendingLimit(scope, who, credits, period, set_by=user_id))
    return (
        f"Done: {say.limit_subject(scope, who)} may spend at most *{credits:,}* credits {say.PER_PERIOD[period]} (UTC)."
    )


async def list_command(services: Services, client: AsyncWebClient, team_id: str, user_id: str) -> str:
    if not await is_admin(client, user_id):
        return ADMINS_ONLY
    found = await services.credits.limits(team_id)
    if not found:
        return f"No spending limits are set. {USAGE}"
    return "*Spending limits* (calendar days and months in UTC)\n" + "\n".join(
        describe(limit, used) for limit, used in found
    )


def describe(limit: SpendingLimit, used: int | None) -> str:
    line = (
        f"• {say.limit_subject(limit.scope, limit.subject)}: {limit.credits:,} credits {say.PER_PERIOD[limit.period]}"
    )
    if used is not None:
        line += f" ({used:,} used {say.THIS_PERIOD[limit.period]})"
    return line
