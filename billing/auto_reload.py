"""Auto-reload: when a workspace's available credits fall below X, buy pack P with its saved card, at most M
times a calendar month (UTC).

The card is saved by the first Checkout purchase made while auto-reload is on (a Stripe Customer per
workspace, `setup_future_usage=off_session`). A settlement that leaves the available credits below X asks
for a reload (`maybe_reload`): one transaction records it as pending, and a partial unique index lets a
workspace have one pending reload only, whatever processes race. Then one off-session PaymentIntent is
confirmed, with the reload's id as its idempotency key. Credits are granted only by the verified
`payment_intent.succeeded` webhook, once per PaymentIntent, through the same purchase record a Checkout
payment gets (so refunds and disputes reverse it like any purchase). A declined card, or one that needs
its owner to authenticate, turns auto-reload off and tells the admin who set it up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
import stripe
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe.params import PaymentIntentCreateParams

from billing.ledger import read_balance
from billing.limits import period_start
from billing.packs import CreditPack
from billing.results import GrantResult
from billing.stripe_tables import PAID, auto_reload_settings, auto_reloads, checkout_sessions, insert_or_ignore

log = logging.getLogger(__name__)

PENDING, SUCCEEDED, FAILED, ERROR = "pending", "succeeded", "failed", "error"
# A workspace found without an enabled rule is not looked up again for this long after a settlement (every
# answer settles; on SQLite each look would take the single write lock). Enabling it here clears that at once.
NO_RULE_RECHECK = timedelta(seconds=60)
RELOAD_METADATA = "auto_reload"  # the PaymentIntent's metadata key naming the reload


@dataclass(frozen=True)
class AutoReloadRule:
    enabled: bool
    below: int
    pack_credits: int
    max_per_month: int
    set_by: str | None
    card_saved: bool
    reloads_this_month: int = 0


class ReloadNotifier(Protocol):
    async def reload_failed(self, team_id: str, user_id: str | None, credits: int, reason: str) -> None: ...


Grant = Callable[[str, str, int, str, str | None], Awaitable[GrantResult]]  # team, payment intent, credits, memo, user


@dataclass(frozen=True)
class ReloadPaid:
    outcome: str
    team_id: str | None = None
    user_id: str | None = None  # who set the rule: told of the purchase
    credits: int = 0
    granted: GrantResult | None = None


def utc_now() -> datetime:
    return datetime.now(UTC)


class AutoReload:
    def __init__(
        self,
        engine: AsyncEngine,
        client: stripe.StripeClient,
        *,
        packs: list[CreditPack],
        currency: str,
        notify: ReloadNotifier,
        clock: Callable[[], datetime] = utc_now,
    ):
        self._engine = engine
        self._client = client
        self._packs = {pack.credits: pack for pack in packs}
        self._currency = currency.lower()
        self._notify = notify
        self._clock = clock
        self._no_rule_until: dict[str, datetime] = {}

    # --- the rule ---------------------------------------------------------------------------------

    async def configure(
        self, team_id: str, *, below: int, pack_credits: int, max_per_month: int, set_by: str
    ) -> AutoReloadRule:
        """Turn auto-reload on (or change it); a card saved before stays saved. ValueError for a pack not offered."""
        if pack_credits not in self._packs or below < 0 or max_per_month < 1:
            raise ValueError("not an auto-reload rule")
        self._no_rule_until.pop(team_id, None)
        values = {
            "enabled": True,
            "below": below,
            "pack_credits": pack_credits,
            "max_per_month": max_per_month,
            "set_by": set_by,
            "updated_at": self._clock(),
        }
        async with self._engine.begin() as conn:
            inserted = await conn.execute(
                insert_or_ignore(self._engine.dialect.name, auto_reload_settings, team_id=team_id, **values)
            )
            if inserted.rowcount == 0:
                await conn.execute(
                    sa.update(auto_reload_settings).where(auto_reload_settings.c.team_id == team_id).values(**values)
                )
        rule = await self.rule(team_id)
        assert rule is not None  # written just above
        return rule

    async def disable(self, team_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(auto_reload_settings)
                .where(auto_reload_settings.c.team_id == team_id, auto_reload_settings.c.enabled.is_(True))
                .values(enabled=False, updated_at=self._clock())
            )
        return result.rowcount > 0

    async def rule(self, team_id: str) -> AutoReloadRule | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(auto_reload_settings).where(auto_reload_settings.c.team_id == team_id))
            ).first()
            if row is None:
                return None
            count = await self._reloads_this_month(conn, team_id)
        return AutoReloadRule(
            row.enabled,
            row.below,
            row.pack_credits,
            row.max_per_month,
            row.set_by,
            card_saved=bool(row.payment_method),
            reloads_this_month=count,
        )

    async def _reloads_this_month(self, conn, team_id: str) -> int:
        return (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(auto_reloads)
                .where(
                    auto_reloads.c.team_id == team_id,
                    auto_reloads.c.status.in_((PENDING, SUCCEEDED)),
                    auto_reloads.c.created_at >= period_start("month", self._clock()),
                )
            )
        ).scalar_one()

    # --- saving the card ----------------------------------------------------------------------------

    async def customer_to_save_card(self, team_id: str, *, even_if_off: bool = False) -> str | None:
        """The workspace's Stripe Customer when its next Checkout purchase should save the card (auto-reload on,
        or just turned off by a failed card: `even_if_off`; no usable card), creating the Customer once; else None."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(auto_reload_settings).where(auto_reload_settings.c.team_id == team_id))
            ).first()
        if row is None or not (row.enabled or even_if_off) or row.payment_method:
            return None
        if row.customer_id:
            return row.customer_id
        customer = await self._client.v1.customers.create_async(
            {"metadata": {"team_id": team_id}, "description": f"Slack workspace {team_id}"},
            options={"idempotency_key": f"customer-{team_id}"},
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(auto_reload_settings)
                .where(auto_reload_settings.c.team_id == team_id, auto_reload_settings.c.customer_id.is_(None))
                .values(customer_id=customer.id)
            )
            stored = (
                await conn.execute(
                    sa.select(auto_reload_settings.c.customer_id).where(auto_reload_settings.c.team_id == team_id)
                )
            ).scalar_one()
        return stored

    async def card_saved(self, team_id: str, customer_id: str, payment_method: str) -> None:
        """A Checkout payment of this Customer saved its card for off-session use."""
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(auto_reload_settings)
                .where(auto_reload_settings.c.team_id == team_id, auto_reload_settings.c.customer_id == customer_id)
                .values(payment_method=payment_method, updated_at=self._clock())
            )
        log.info("team %s: card saved for auto-reload", team_id)

    # --- reloading ------------------------------------------------------------------------------------

    async def maybe_reload(self, team_id: str) -> str:
        """After a settlement: buy the pack if the rule says so. Returns what happened (for the log and tests)."""
        reload = await self._claim(team_id)
        if isinstance(reload, str):
            return reload
        reload_id, rule_row, pack = reload
        params: PaymentIntentCreateParams = {
            "amount": pack.unit_amount,
            "currency": pack.currency,
            "customer": rule_row.customer_id,
            "payment_method": rule_row.payment_method,
            "off_session": True,
            "confirm": True,
            "description": f"Auto-reload: {pack.credits:,} credits",
            "metadata": {RELOAD_METADATA: reload_id, "team_id": team_id, "credits": str(pack.credits)},
        }
        try:
            intent = await self._client.v1.payment_intents.create_async(params, options={"idempotency_key": reload_id})
        except stripe.CardError as error:
            intent_id = getattr(getattr(error, "error", None), "payment_intent", None)
            await self._failed(reload_id, getattr(intent_id, "id", None), error.code or "card_error")
            return f"failed: {error.code}"
        except stripe.StripeError as error:
            # Not a refusal of the card: the payment may or may not exist. Its webhook, if it succeeded, still
            # grants (the reload's id is in its metadata); meanwhile the next settlement may try again.
            log.warning(
                "auto-reload %s of %s: Stripe error %s (request %s)",
                reload_id,
                team_id,
                error.__class__.__name__,
                error.request_id,
            )
            await self._finish(reload_id, ERROR, None, error.__class__.__name__)
            return "error"
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(auto_reloads).where(auto_reloads.c.id == reload_id).values(payment_intent=intent.id)
            )
        log.info("auto-reload %s of %s: PaymentIntent %s is %s", reload_id, team_id, intent.id, intent.status)
        return f"requested {intent.id}"

    async def _claim(self, team_id: str):
        now = self._clock()
        if self._no_rule_until.get(team_id, now) > now:
            return "off"
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(auto_reload_settings).where(
                        auto_reload_settings.c.team_id == team_id, auto_reload_settings.c.enabled.is_(True)
                    )
                )
            ).first()
            if row is None:
                if len(self._no_rule_until) > 10_000:  # bounded: forget what has expired
                    self._no_rule_until = {team: until for team, until in self._no_rule_until.items() if until > now}
                self._no_rule_until[team_id] = now + NO_RULE_RECHECK
                return "off"
            if not row.payment_method:
                return "no card saved"
            balance, reserved = await read_balance(conn, team_id) or (0, 0)
            if balance - reserved >= row.below:
                return "enough credits"
            pack = self._packs.get(row.pack_credits)
            if pack is None:
                return "pack no longer offered"
            if await self._reloads_this_month(conn, team_id) >= row.max_per_month:
                return "monthly maximum reached"
            reload_id = f"reload-{uuid.uuid4().hex}"
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        sa.insert(auto_reloads).values(
                            id=reload_id,
                            team_id=team_id,
                            credits=pack.credits,
                            amount=pack.unit_amount,
                            currency=pack.currency,
                            status=PENDING,
                            created_at=now,
                        )
                    )
            except IntegrityError:
                return "a reload is in flight"
        return reload_id, row, pack

    async def _finish(self, reload_id: str, status: str, payment_intent: str | None, failure: str | None) -> bool:
        """pending -> status; False when it was not pending any more (the other path got there first)."""
        values: dict = {"status": status, "finished_at": self._clock(), "failure": failure}
        if payment_intent:
            values["payment_intent"] = payment_intent
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(auto_reloads)
                .where(auto_reloads.c.id == reload_id, auto_reloads.c.status == PENDING)
                .values(**values)
            )
        return result.rowcount > 0

    async def _failed(self, reload_id: str, payment_intent: str | None, reason: str) -> None:
        if not await self._finish(reload_id, FAILED, payment_intent, reason):
            return  # told already
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(auto_reloads.c.team_id, auto_reloads.c.credits).where(auto_reloads.c.id == reload_id)
                )
            ).one()
            rule = (
                await conn.execute(
                    sa.select(auto_reload_settings.c.set_by).where(auto_reload_settings.c.team_id == row.team_id)
                )
            ).first()
            # The card failed: off, and forgotten, so that the next purchase can save a better one.
            await conn.execute(
                sa.update(auto_reload_settings)
                .where(auto_reload_settings.c.team_id == row.team_id)
                .values(enabled=False, payment_method=None, updated_at=self._clock())
            )
        log.warning("auto-reload %s of %s failed (%s); auto-reload turned off", reload_id, row.team_id, reason)
        try:
            await self._notify.reload_failed(row.team_id, rule.set_by if rule else None, row.credits, reason)
        except Exception:
            log.exception("could not tell team %s that its auto-reload failed", row.team_id)

    # --- webhooks -------------------------------------------------------------------------------------

    async def payment_succeeded(self, intent: dict[str, Any], grant: Grant) -> ReloadPaid:
        """payment_intent.succeeded of a reload: recorded as a purchase and granted once."""
        reload_id = (intent.get("metadata") or {}).get(RELOAD_METADATA)
        async with self._engine.begin() as conn:
            row = (await conn.execute(sa.select(auto_reloads).where(auto_reloads.c.id == reload_id))).first()
            if row is None:
                return ReloadPaid("not a reload of ours")
            if intent.get("amount") != row.amount or str(intent.get("currency") or "").lower() != row.currency.lower():
                log.error(
                    "auto-reload %s: PaymentIntent %s paid %r %r, not %r %r; no credits granted",
                    reload_id,
                    intent.get("id"),
                    intent.get("amount"),
                    intent.get("currency"),
                    row.amount,
                    row.currency,
                )
                return ReloadPaid("amount mismatch")
            rule = (
                await conn.execute(
                    sa.select(auto_reload_settings.c.set_by).where(auto_reload_settings.c.team_id == row.team_id)
                )
            ).first()
            now = self._clock()
            # The purchase record every payment has: refunds and disputes of the PaymentIntent find it.
            await conn.execute(
                insert_or_ignore(
                    self._engine.dialect.name,
                    checkout_sessions,
                    id=intent["id"],
                    team_id=row.team_id,
                    user_id=rule.set_by if rule else None,
                    credits=row.credits,
                    amount_total=row.amount,
                    currency=row.currency,
                    status=PAID,
                    payment_intent=intent["id"],
                    idempotency_key=reload_id,
                    created_at=now,
                    expires_at=now,
                    paid_at=now,
                    granted_at=now,
                )
            )
            await conn.execute(
                sa.update(auto_reloads)
                .where(auto_reloads.c.id == reload_id, auto_reloads.c.status != SUCCEEDED)
                .values(status=SUCCEEDED, payment_intent=intent["id"], finished_at=now, failure=None)
            )
        user_id = rule.set_by if rule else None
        granted = await grant(
            row.team_id, intent["id"], row.credits, f"Auto-reload {reload_id}: {row.amount} {row.currency}", user_id
        )
        return ReloadPaid(
            "granted" if granted.applied else "already granted", row.team_id, user_id, row.credits, granted
        )

    async def payment_failed(self, intent: dict[str, Any]) -> str:
        reload_id = (intent.get("metadata") or {}).get(RELOAD_METADATA)
        if not reload_id:
            return "not a reload of ours"
        reason = ((intent.get("last_payment_error") or {}).get("code")) or "payment_failed"
        await self._failed(reload_id, intent.get("id"), reason)
        return f"reload failed ({reason})"
