"""`/credits autoreload` (admins) and the reload after a settlement.

/credits autoreload below 200 buy 2000 max 3   when available credits fall below 200, buy the 2,000 pack,
                                              at most 3 times a calendar month (UTC)
/credits autoreload off                        turn it off
/credits autoreload                            what is set
"""

from __future__ import annotations

import logging
import re

from slack_sdk.web.async_client import AsyncWebClient

from billing import AutoReloadRule
from bot.services import Services
from bot.surfaces.admins import is_admin

log = logging.getLogger(__name__)

USAGE = (
    "Auto-reload: `/credits autoreload below 200 buy 2000 max 3` buys the 2,000-credit pack whenever fewer than "
    "200 credits are available, at most 3 times a month (UTC); `/credits autoreload off` turns it off."
)
ADMINS_ONLY = "Only workspace admins and owners can set up auto-reload."
_RULE = re.compile(r"^below (\d[\d,]*) buy (\d[\d,]*)(?: max (\d+))?$")


def describe(rule: AutoReloadRule | None) -> str:
    if rule is None or not rule.enabled:
        return f"Auto-reload is off. {USAGE}"
    text = (
        f"Auto-reload is on: when fewer than *{rule.below:,}* credits are available, I buy *{rule.pack_credits:,}* "
        f"credits, at most {rule.max_per_month} times a month (UTC; {rule.reloads_this_month} so far this month)."
    )
    if not rule.card_saved:
        text += f" No card is saved yet: the next purchase with `/credits buy {rule.pack_credits}` saves it."
    return text


async def autoreload_command(
    services: Services, client: AsyncWebClient, team_id: str, user_id: str, args: list[str]
) -> str:
    if services.reloads is None or services.checkout is None:
        return "Auto-reload needs Stripe, and top-ups are not set up in this workspace."
    if not await is_admin(client, user_id):
        return ADMINS_ONLY
    if not args:
        return describe(await services.reloads.rule(team_id))
    if [word.lower() for word in args] == ["off"]:
        await services.reloads.disable(team_id)
        return "Auto-reload is off."
    match = _RULE.match(" ".join(args).lower())
    if match is None:
        return f"I didn't understand that. {USAGE}"
    below, pack = (int(group.replace(",", "")) for group in match.groups()[:2])
    max_per_month = int(match.group(3) or 1)
    offered = sorted(pack.credits for pack in services.checkout.packs)
    if pack not in offered:
        return f"There is no {pack:,}-credit pack. Packs: {', '.join(f'{p:,}' for p in offered)}."
    if max_per_month < 1:
        return "The monthly maximum must be at least 1."
    rule = await services.reloads.configure(
        team_id, below=below, pack_credits=pack, max_per_month=max_per_month, set_by=user_id
    )
    return describe(rule)


async def reload_if_low(services: Services, team_id: str) -> None:
    """After an answer was charged: buy the pack if the workspace's rule says so (errors only logged)."""
    if services.reloads is None:
        return
    try:
        outcome = await services.reloads.maybe_reload(team_id)
    except Exception:
        log.exception("auto-reload of team %s failed", team_id)
        return
    if outcome.startswith(("requested", "failed", "error")):
        log.info("auto-reload of team %s: %s", team_id, outcome)
