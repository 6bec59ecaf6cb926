"""Tells a buyer in a DM what became of their purchase (billing calls this after the change is committed)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery import SlackSchedulers

log = logging.getLogger(__name__)

ClientForTeam = Callable[[str], Awaitable[AsyncWebClient | None]]
RefreshHome = Callable[[str, str], Awaitable[None]]
CheckoutLinkFor = Callable[[str, str, int], Awaitable[str | None]]  # team, user, credits -> a Checkout page


class SlackPurchaseNotices:
    """billing.PurchaseNotifier, by direct message (through the workspace's Slack scheduler)."""

    def __init__(
        self,
        client_for_team: ClientForTeam,
        schedulers: SlackSchedulers,
        *,
        refresh_home: RefreshHome | None = None,
        checkout_link: CheckoutLinkFor | None = None,
    ):
        self._client_for_team = client_for_team
        self._schedulers = schedulers
        self._refresh_home = refresh_home
        self._checkout_link = checkout_link

    async def _dm(self, team_id: str, user_id: str | None, text: str) -> None:
        client = await self._client_for_team(team_id)
        if client is None or not user_id:
            log.warning("cannot DM the buyer %s in team %s", user_id, team_id)
            return
        await self._schedulers.for_team(team_id).direct_message(client, user_id, text=text)

    async def purchase_granted(
        self, team_id: str, user_id: str | None, credits: int, balance: int, receipt_url: str | None = None
    ) -> None:
        receipt = f" <{receipt_url}|Stripe's receipt>" if receipt_url else ""
        try:
            await self._dm(
                team_id,
                user_id,
                f"✅ Thank you! {credits:,} credits were added to this workspace. "
                f"The balance is now {balance:,} credits.{receipt}",
            )
        finally:
            # The buyer most likely paid from the Home tab: show the new balance there too.
            if self._refresh_home is not None and user_id:
                try:
                    await self._refresh_home(team_id, user_id)
                except Exception:
                    log.exception("could not refresh the Home tab of %s in team %s", user_id, team_id)

    async def reload_failed(self, team_id: str, user_id: str | None, credits: int, reason: str) -> None:
        why = (
            "the card's bank wants you to confirm the payment"
            if reason == "authentication_required"
            else "the card was declined"
        )
        link = None
        if self._checkout_link is not None and user_id:
            try:
                link = await self._checkout_link(team_id, user_id, credits)
            except Exception as error:
                log.warning("no checkout link for the failed reload of %s (%s)", team_id, error.__class__.__name__)
        buy = f"<{link}|Buy {credits:,} credits by hand>" if link else f"Buy by hand with `/credits buy {credits}`"
        await self._dm(
            team_id,
            user_id,
            f"⚠️ Auto-reload couldn't buy {credits:,} credits: {why}. Auto-reload is now off. {buy}, "
            "then turn auto-reload back on with `/credits autoreload`.",
        )

    async def payment_failed(self, team_id: str, user_id: str | None) -> None:
        await self._dm(
            team_id,
            user_id,
            "Your payment for credits did not go through, so no credits were added. You can try again with `/credits`.",
        )
