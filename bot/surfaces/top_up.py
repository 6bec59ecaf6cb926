"""Buying credits from Slack: the pack buttons, who may buy, and the Stripe Checkout link."""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from billing import CheckoutError, CreditPack, find_pack
from bot.services import Services
from bot.surfaces.admins import is_admin

log = logging.getLogger(__name__)

BUY_ACTION_PREFIX = "buy_credits"
NOT_CONFIGURED = "Top-ups are not configured on this bot yet; ask the person who runs it to add credits."


def pack_buttons(packs: list[CreditPack]) -> list[dict]:
    return [
        {
            "type": "button",
            "action_id": f"{BUY_ACTION_PREFIX}_{pack.credits}",
            "text": {
                "type": "plain_text",
                "text": f"Buy {pack.label}" + (f" · {pack.display_price}" if pack.display_price else ""),
            },
            "value": str(pack.credits),
        }
        for pack in packs
    ]


def top_up_offer(services: Services) -> tuple[list[dict] | None, str]:
    """The buy buttons for `/credits` and the App Home, and a line saying how buying works."""
    if services.checkout is None:
        return None, NOT_CONFIGURED
    who = "Workspace admins" if services.settings.credits_buyers == "admins" else "Anyone in this workspace"
    return pack_buttons(services.checkout.packs), f"{who} can buy credits; payment is by card through Stripe Checkout."


async def may_buy(services: Services, client: AsyncWebClient, user_id: str) -> bool:
    return services.settings.credits_buyers == "everyone" or await is_admin(client, user_id)


def pack_size(value: object) -> int | None:
    """The number of credits a button's value or a `/credits buy` argument names ("2,000" too); None for
    anything else ("abc", "1e3", "²", "-5")."""
    if not isinstance(value, str):
        return None
    digits = value.strip().replace(",", "")
    if not digits or len(digits) > 12 or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits)


def no_such_pack(services: Services, asked: str) -> dict:
    shown = asked if len(asked) <= 20 else asked[:19] + "…"
    offered = ", ".join(str(p.credits) for p in services.checkout.packs) if services.checkout else ""
    text = f"There is no pack of {shown} credits." + (f" Packs for sale: {offered}." if offered else "")
    return _message(text)


def _message(text: str, blocks: list[dict] | None = None) -> dict:
    return {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": text,
        **({"blocks": blocks} if blocks else {}),
    }


async def checkout_message(
    services: Services, client: AsyncWebClient, *, team_id: str, user_id: str, credits: int, request_key: str
) -> dict:
    """The ephemeral answer to "buy this pack": a button that opens Stripe Checkout, or why not."""
    try:
        return await _checkout_message(
            services, client, team_id=team_id, user_id=user_id, credits=credits, request_key=request_key
        )
    except Exception:
        log.exception("opening a checkout for team %s failed unexpectedly", team_id)
        return _message("⚠️ I couldn't open a checkout page just now. Please try again in a minute.")


async def _checkout_message(
    services: Services, client: AsyncWebClient, *, team_id: str, user_id: str, credits: int, request_key: str
) -> dict:
    if services.checkout is None:
        return _message(NOT_CONFIGURED)
    pack = find_pack(services.checkout.packs, credits)
    if pack is None:
        return no_such_pack(services, f"{credits:,}")
    if not await may_buy(services, client, user_id):
        return _message("Only workspace admins can buy credits here. Please ask an admin to top up.")
    try:
        save_card_for = await services.reloads.customer_to_save_card(team_id) if services.reloads else None
        link = await services.checkout.create_session(
            team_id, user_id, pack, request_key=request_key, save_card_for=save_card_for
        )
    except CheckoutError as error:
        log.warning("checkout for team %s failed (Stripe request %s): %s", team_id, error.request_id, error.message)
        return _message(f"⚠️ {error.message}")
    price = f" for {pack.display_price}" if pack.display_price else ""
    text = f"Your checkout for {pack.label}{price} is ready. The link is valid for an hour: {link.url}"
    blocks = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"Your checkout for *{pack.label}*{price} is ready. The link is valid for an "
                "hour; the credits arrive with a DM once Stripe confirms the payment.",
            },
            "accessory": {
                "type": "button",
                "action_id": "open_checkout",
                "text": {"type": "plain_text", "text": "Pay with Stripe"},
                "url": link.url,
                "style": "primary",
            },
        }
    ]
    return _message(text, blocks)
