"""Stripe webhooks: grant a paid Checkout Session's credits once; take them back on refunds and disputes.

Stripe delivers every event at least once, in any order, sometimes concurrently, and different events
describe the same purchase. So nothing here trusts the event id alone:

* the purchase is one ledger entry keyed by the Checkout Session id (UNIQUE(source, external_id)),
  whatever the number of events or deliveries;
* refunds and disputes are facts merged monotonically into `stripe_payments` (refunded total only
  grows, a closed dispute stays closed), and `_reconcile` moves the session's `credits_reversed`
  to what those facts imply, in numbered steps that each become exactly one ledger entry.

Credits.grant commits its own transaction and SQLite cannot nest a second writer inside ours, so an
event is several short transactions rather than one; every step is idempotent and the event id is
recorded last, so a crash half-way is completed by Stripe's next delivery of the same event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
import stripe
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.auto_reload import AutoReload
from billing.metrics import STRIPE_WEBHOOK_EVENTS
from billing.results import GrantResult
from billing.stripe_tables import (
    DISPUTE_LOST,
    DISPUTE_OPEN,
    DISPUTE_WON,
    EXPIRED,
    FAILED,
    MISMATCH,
    OPEN,
    PAID,
    UNPAID,
    checkout_sessions,
    events,
    insert_or_ignore,
    merge_dispute,
    merge_refund,
    payments,
    utc_now,
)
from storage.errors import is_transient

log = logging.getLogger(__name__)

LEDGER_SOURCE = "stripe-checkout"
NOTIFY_TIMEOUT_SECONDS = 5.0  # Stripe waits ~10 s for an answer; a slow Slack must not make it retry
MAX_RECONCILE_STEPS = 20
# Dispute statuses after `charge.dispute.closed`: only "lost" means the money is gone; won, an
# inquiry closed without a chargeback (warning_closed) and prevented all leave it with us.
CLOSED_DISPUTE = {"lost": DISPUTE_LOST, "won": DISPUTE_WON, "warning_closed": DISPUTE_WON, "prevented": DISPUTE_WON}


class PurchaseNotifier(Protocol):
    """Implemented by the bot (Slack DMs). Called after the change is committed; errors are only logged."""

    async def purchase_granted(
        self, team_id: str, user_id: str | None, credits: int, balance: int, receipt_url: str | None = None
    ) -> None: ...

    async def payment_failed(self, team_id: str, user_id: str | None) -> None: ...


class MalformedEvent(Exception):
    """A correctly signed event that lacks what its type promises: retrying it cannot help."""


def reversal_target(credits: int, paid: int, amount_refunded: int, dispute_status: str | None) -> int:
    """Credits that should be taken back from a purchase of `credits` for `paid` (in the currency's minor
    unit, as recorded when the purchase was granted), given what Stripe reported about its charge.

    Refunds take back the refunded share rounded DOWN (the buyer keeps a fraction of a credit rather
    than losing one they paid for); a full refund takes back exactly everything. An open or lost
    dispute takes back the whole purchase; a won one leaves only the refunds. What an event says the
    charge's amount is plays no part: only the purchase's own amount does.
    """
    if dispute_status in (DISPUTE_OPEN, DISPUTE_LOST):
        return credits
    if paid <= 0 or amount_refunded <= 0:
        return 0
    return min(credits, credits * min(amount_refunded, paid) // paid)


Notification = Callable[[], Awaitable[None]]


class StripeWebhook:
    def __init__(
        self,
        engine: AsyncEngine,
        credits,
        *,
        webhook_secret: str,
        notify: PurchaseNotifier,
        clock: Callable[[], datetime] = utc_now,
        tolerance_seconds: int = stripe.Webhook.DEFAULT_TOLERANCE,
        client: stripe.StripeClient | None = None,
        reloads: AutoReload | None = None,
    ):
        self._engine = engine
        self._client = client  # reads the receipt of a purchase for its DM, and the card it saved
        self._reloads = reloads
        self._credits = credits
        self._secret = webhook_secret
        self._notify = notify
        self._clock = clock
        self._tolerance = tolerance_seconds
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[tuple[str, list[Notification]]]]] = {
            "checkout.session.completed": self._session_completed,
            "checkout.session.async_payment_succeeded": self._session_completed,
            "checkout.session.async_payment_failed": self._payment_failed,
            "checkout.session.expired": self._session_expired,
            "charge.refunded": self._charge_refunded,
            "charge.dispute.created": self._dispute_changed,
            "charge.dispute.closed": self._dispute_changed,
            "payment_intent.succeeded": self._reload_succeeded,
            "payment_intent.payment_failed": self._reload_failed,
        }

    async def handle(self, payload: bytes, signature: str | None) -> tuple[int, str]:
        """(HTTP status, short text) for one delivery. 400: not from Stripe; 500: try again later."""
        status, text, event_type, result = await self._handle(payload, signature)
        STRIPE_WEBHOOK_EVENTS.labels(event_type, result).inc()
        return status, text

    async def _handle(self, payload: bytes, signature: str | None) -> tuple[int, str, str, str]:
        try:
            event = stripe.Webhook.construct_event(
                payload, signature, self._secret, tolerance=self._tolerance
            ).to_dict()
        except stripe.SignatureVerificationError as error:
            log.warning("Rejected a Stripe webhook: %s", str(error).split(". ")[0])
            return 400, "invalid signature", "unverified", "rejected"
        except (ValueError, TypeError, AttributeError, RecursionError):  # not JSON, not UTF-8, not an object
            log.warning("Rejected a Stripe webhook whose body is not an event")
            return 400, "invalid payload", "unverified", "rejected"
        data = event.get("data")
        event_id, event_type = event.get("id"), event.get("type")
        obj = data.get("object") if isinstance(data, dict) else None
        if not (isinstance(event_id, str) and isinstance(event_type, str) and isinstance(obj, dict)):
            log.warning("Rejected a Stripe webhook whose body is not an event")
            return 400, "invalid payload", "unverified", "rejected"

        try:
            if await self._already_processed(event_id):
                return 200, "duplicate", event_type, "duplicate"
            handler = self._handlers.get(event_type)
            outcome, notifications = ("ignored", []) if handler is None else await handler(obj)
            await self._record_processed(event_id, event_type)
        except MalformedEvent as error:
            log.error("Stripe event %s (%s) cannot be processed: %s", event_id, event_type, error)
            return 200, "malformed event ignored", event_type, "malformed"
        except Exception as error:
            # Transient or not, a 500 makes Stripe deliver again (for three days): nothing is lost while
            # the database is down or a bug is being fixed, and every step is idempotent.
            if is_transient(error):
                log.warning("Stripe event %s (%s) failed, Stripe will retry: %r", event_id, event_type, error)
            else:
                log.exception("Stripe event %s (%s) failed unexpectedly; Stripe will retry", event_id, event_type)
            return 500, "temporarily unavailable", event_type, "failed"
        log.info("Stripe event %s (%s): %s", event_id, event_type, outcome)
        for notification in notifications:
            await self._send(notification)
        return 200, outcome, event_type, "ignored" if handler is None else "processed"

    async def prune_events(self, older_than: timedelta = timedelta(days=30)) -> int:
        """Forget processed event ids older than Stripe's retry window (3 days) plus a margin."""
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(events).where(events.c.received_at < self._clock() - older_than))
        return result.rowcount

    # --- Checkout Session events ----------------------------------------------------------------------
    async def _session_completed(self, session: dict[str, Any]) -> tuple[str, list[Notification]]:
        session_id = _required(session, "id")
        if session.get("payment_status") != "paid":
            # Delayed methods (bank debits) complete "unpaid"; async_payment_succeeded follows.
            await self._set_status(session_id, UNPAID, _optional_id(session, "payment_intent"), only_from=(OPEN,))
            return "awaiting payment", []

        row = await self._mark_paid(session_id, session)
        if isinstance(row, str):
            return row, []
        result = await self._credits.grant(
            row.team_id,
            row.credits,
            kind="purchase",
            source=LEDGER_SOURCE,
            external_id=session_id,
            user_id=row.user_id,
            memo=f"Stripe Checkout {session_id}: {row.amount_total} {row.currency}",
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(checkout_sessions)
                .where(checkout_sessions.c.id == session_id, checkout_sessions.c.granted_at.is_(None))
                .values(granted_at=self._clock())
            )
        await self._reconcile(session_id)  # a refund or dispute may have been delivered before the payment
        await self._save_card(row.team_id, session)
        if not result.applied:
            return "already granted", []

        payment_intent = _optional_id(session, "payment_intent") or row.payment_intent

        async def notify() -> None:
            receipt = await self._receipt_url(payment_intent)
            await self._notify.purchase_granted(row.team_id, row.user_id, row.credits, result.balance, receipt)

        return f"granted {row.credits} credits to {row.team_id}", [notify]

    async def _save_card(self, team_id: str, session: dict[str, Any]) -> None:
        """A purchase made to save the card for auto-reload (the session names the workspace's Customer)."""
        customer, payment_intent = _optional_id(session, "customer"), _optional_id(session, "payment_intent")
        if self._reloads is None or self._client is None or not customer or not payment_intent:
            return
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(payment_intent)
        except stripe.StripeError as error:
            log.warning(
                "could not read the card of %s (%s, request %s)",
                payment_intent,
                error.__class__.__name__,
                error.request_id,
            )
            return
        method = intent.payment_method
        method_id = method if isinstance(method, str) else getattr(method, "id", None)
        if method_id and getattr(intent, "setup_future_usage", None) == "off_session":
            await self._reloads.card_saved(team_id, customer, method_id)

    async def _reload_succeeded(self, intent: dict[str, Any]) -> tuple[str, list[Notification]]:
        if self._reloads is None:
            return "ignored", []

        async def grant(team_id: str, payment_intent: str, credits: int, memo: str, user_id: str | None) -> GrantResult:
            result = await self._credits.grant(
                team_id,
                credits,
                kind="purchase",
                source=LEDGER_SOURCE,
                external_id=payment_intent,
                user_id=user_id,
                memo=memo,
            )
            await self._reconcile(payment_intent)  # its purchase record's id is the PaymentIntent's
            return result

        reload = await self._reloads.payment_succeeded(intent, grant)
        granted = reload.granted
        if granted is None or not granted.applied:
            return reload.outcome, []
        team_id = reload.team_id
        assert team_id is not None  # a granted reload names its workspace
        payment_intent = _required(intent, "id")

        async def notify() -> None:
            receipt = await self._receipt_url(payment_intent)
            await self._notify.purchase_granted(team_id, reload.user_id, reload.credits, granted.balance, receipt)

        return f"auto-reload granted {reload.credits} credits to {reload.team_id}", [notify]

    async def _reload_failed(self, intent: dict[str, Any]) -> tuple[str, list[Notification]]:
        if self._reloads is None:
            return "ignored", []
        return await self._reloads.payment_failed(intent), []

    async def _receipt_url(self, payment_intent: str | None) -> str | None:
        """Stripe's receipt of the payment (its charge's receipt_url); None when Stripe will not say."""
        if self._client is None or not payment_intent:
            return None
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(
                payment_intent, params={"expand": ["latest_charge"]}
            )
        except stripe.StripeError as error:
            log.warning(
                "no receipt for %s (%s, request %s)", payment_intent, error.__class__.__name__, error.request_id
            )
            return None
        charge = intent.latest_charge
        return getattr(charge, "receipt_url", None) if charge is not None and not isinstance(charge, str) else None

    async def _mark_paid(self, session_id: str, session: dict[str, Any]):
        """The recorded session if the payment matches it (now marked paid), else why not (a str)."""
        amount_total, currency = session.get("amount_total"), str(session.get("currency") or "").lower()
        async with self._engine.begin() as conn:
            row = (await conn.execute(sa.select(checkout_sessions).where(checkout_sessions.c.id == session_id))).first()
            if row is None:
                log.error("Stripe says Checkout Session %s was paid, but this app never created it", session_id)
                return "unknown session"
            where = [checkout_sessions.c.id == session_id, checkout_sessions.c.paid_at.is_(None)]
            payment_intent = _optional_id(session, "payment_intent") or row.payment_intent
            if amount_total != row.amount_total or currency != row.currency.lower():
                log.error(
                    "Checkout Session %s paid %r %r but was opened for %r %r (team %s): no credits granted",
                    session_id,
                    amount_total,
                    currency,
                    row.amount_total,
                    row.currency,
                    row.team_id,
                )
                await conn.execute(
                    sa.update(checkout_sessions).where(*where).values(status=MISMATCH, payment_intent=payment_intent)
                )
                return "amount mismatch"
            await conn.execute(
                sa.update(checkout_sessions)
                .where(*where)
                .values(status=PAID, paid_at=self._clock(), payment_intent=payment_intent)
            )
        return row

    async def _payment_failed(self, session: dict[str, Any]) -> tuple[str, list[Notification]]:
        session_id = _required(session, "id")
        row = await self._set_status(
            session_id, FAILED, _optional_id(session, "payment_intent"), only_from=(OPEN, UNPAID)
        )
        if row is None:  # unknown, paid, or already failed: tell the buyer at most once
            return "nothing to do", []

        async def notify() -> None:
            await self._notify.payment_failed(row.team_id, row.user_id)

        return "payment failed", [notify]

    async def _session_expired(self, session: dict[str, Any]) -> tuple[str, list[Notification]]:
        await self._set_status(_required(session, "id"), EXPIRED, None, only_from=(OPEN,))
        return "expired", []

    async def _set_status(
        self, session_id: str, status: str, payment_intent: str | None, *, only_from: tuple[str, ...]
    ):
        """Move an unpaid session to `status`; the row if this call changed it, else None."""
        values: dict[str, Any] = {"status": status}
        if payment_intent:
            values["payment_intent"] = payment_intent
        async with self._engine.begin() as conn:
            return (
                await conn.execute(
                    sa.update(checkout_sessions)
                    .where(
                        checkout_sessions.c.id == session_id,
                        checkout_sessions.c.paid_at.is_(None),
                        checkout_sessions.c.status.in_(only_from),
                    )
                    .values(**values)
                    .returning(checkout_sessions.c.team_id, checkout_sessions.c.user_id)
                )
            ).first()

    # --- refunds and disputes -------------------------------------------------------------------------
    async def _charge_refunded(self, charge: dict[str, Any]) -> tuple[str, list[Notification]]:
        payment_intent = _required(charge, "payment_intent")
        amount, refunded = _required_amount(charge, "amount"), _required_amount(charge, "amount_refunded")
        async with self._engine.begin() as conn:
            await merge_refund(conn, payment_intent, amount=amount, amount_refunded=refunded, now=self._clock())
        return await self._reconcile_payment(payment_intent, f"refunded {refunded} of {amount}")

    async def _dispute_changed(self, dispute: dict[str, Any]) -> tuple[str, list[Notification]]:
        payment_intent, stripe_status = _required(dispute, "payment_intent"), dispute.get("status")
        if not isinstance(stripe_status, str):
            raise MalformedEvent(f"dispute {dispute.get('id', '?')} has an invalid status: {stripe_status!r}")
        # Created, or closed with a status we do not know: the funds are (still) withdrawn.
        status = CLOSED_DISPUTE.get(stripe_status, DISPUTE_OPEN)
        async with self._engine.begin() as conn:
            await merge_dispute(conn, payment_intent, status, now=self._clock())
        return await self._reconcile_payment(payment_intent, f"dispute {stripe_status}")

    async def _reconcile_payment(self, payment_intent: str, fact: str) -> tuple[str, list[Notification]]:
        async with self._engine.connect() as conn:
            session_id = (
                await conn.execute(
                    sa.select(checkout_sessions.c.id).where(checkout_sessions.c.payment_intent == payment_intent)
                )
            ).scalar()
        if session_id is None:
            # Not (yet) a purchase we know: the fact is kept and applied when its checkout event arrives.
            return f"{fact}; no purchase known for {payment_intent}", []
        await self._reconcile(session_id)
        return f"{fact}; session {session_id} reconciled", []

    async def _reconcile(self, session_id: str) -> None:
        """Bring the session's credits_reversed to reversal_target(), one ledger entry per change.

        A change is claimed by a compare-and-set on adjustment_seq (one concurrent claimant wins, the
        others re-read), written to the ledger under the key "<session>/adjustment/<seq>", then marked
        done. A step left pending by a crash is finished by whichever delivery comes next.
        """
        for _ in range(MAX_RECONCILE_STEPS):
            async with self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.select(checkout_sessions, payments.c.amount_refunded, payments.c.dispute_status)
                        .select_from(
                            checkout_sessions.outerjoin(
                                payments, payments.c.payment_intent == checkout_sessions.c.payment_intent
                            )
                        )
                        .where(checkout_sessions.c.id == session_id)
                    )
                ).first()
                if row is None or row.paid_at is None:
                    return  # nothing was bought, so nothing can be taken back
                if row.pending_adjustment:
                    step = (row.adjustment_seq, row.pending_adjustment, row.pending_kind)
                else:
                    target = reversal_target(
                        row.credits, row.amount_total, row.amount_refunded or 0, row.dispute_status
                    )
                    change = target - row.credits_reversed
                    if change == 0:
                        return
                    disputed = row.dispute_status in (DISPUTE_OPEN, DISPUTE_LOST)
                    kind = "adjustment" if change < 0 else "reversal" if disputed else "refund"
                    step = (row.adjustment_seq + 1, -change, kind)
                    claimed = await conn.execute(
                        sa.update(checkout_sessions)
                        .where(
                            checkout_sessions.c.id == session_id,
                            checkout_sessions.c.adjustment_seq == row.adjustment_seq,
                            checkout_sessions.c.pending_adjustment == 0,
                        )
                        .values(
                            credits_reversed=target,
                            adjustment_seq=step[0],
                            pending_adjustment=step[1],
                            pending_kind=kind,
                        )
                    )
                    if claimed.rowcount != 1:
                        continue  # another delivery moved first; look again
            await self._apply_step(row, *step)
        raise RuntimeError(f"reconciling Checkout Session {session_id} did not settle")

    async def _apply_step(self, row, seq: int, amount: int, kind: str) -> None:
        await self._credits.grant(
            row.team_id,
            amount,
            kind=kind,
            source=LEDGER_SOURCE,
            external_id=f"{row.id}/adjustment/{seq}",
            user_id=row.user_id,
            memo=f"Stripe {kind} for Checkout Session {row.id}",
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(checkout_sessions)
                .where(checkout_sessions.c.id == row.id, checkout_sessions.c.adjustment_seq == seq)
                .values(pending_adjustment=0, pending_kind=None)
            )
        log.info("Checkout Session %s: %s of %d credits for team %s", row.id, kind, amount, row.team_id)

    # --- bookkeeping ----------------------------------------------------------------------------------
    async def _already_processed(self, event_id: str) -> bool:
        async with self._engine.connect() as conn:
            return (await conn.execute(sa.select(events.c.id).where(events.c.id == event_id))).first() is not None

    async def _record_processed(self, event_id: str, event_type: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert_or_ignore(
                    self._engine.dialect.name, events, id=event_id, type=event_type, received_at=self._clock()
                )
            )

    async def _send(self, notification: Notification) -> None:
        try:
            async with asyncio.timeout(NOTIFY_TIMEOUT_SECONDS):
                await notification()
        except Exception:
            log.exception("Could not tell the buyer about a Stripe event (the credits are booked regardless)")


MAX_AMOUNT = 10**15  # far beyond any real charge, and within a BIGINT


def _required(obj: dict[str, Any], key: str) -> str:
    """A Stripe id: a string, or an expanded object's `id`."""
    value = _optional_id(obj, key)
    if value is None:
        raise MalformedEvent(f"{obj.get('object', 'object')} {obj.get('id', '?')!r} has no {key}")
    return value


def _optional_id(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if isinstance(value, dict):  # expanded
        value = value.get("id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise MalformedEvent(f"{obj.get('object', 'object')} {obj.get('id', '?')!r} has an invalid {key}")
    return value


def _required_amount(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT:
        raise MalformedEvent(f"{obj.get('object', 'object')} {obj.get('id', '?')!r} has an invalid {key}: {value!r}")
    return value
