"""Open a Stripe Checkout page for a credit pack and remember the session it created.

Nothing here grants credits: the buyer's redirect proves nothing, only a verified webhook does
(billing/stripe_webhook.py). This module records what was offered (pack, amount, currency) so the
webhook can check that what was paid matches it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
import sqlalchemy as sa
import stripe
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe.params.checkout import SessionCreateParams, SessionCreateParamsLineItem

from billing.packs import CreditPack
from billing.stripe_tables import OPEN, as_utc, checkout_requests, checkout_sessions, insert_or_ignore, utc_now

log = logging.getLogger(__name__)

# Stripe accepts 30 minutes to 24 hours; an hour is long enough to find a card.
SESSION_LIFETIME = timedelta(hours=1)
# Presses of the same button within this window are one purchase (double clicks, retried requests).
# A press after it is a new purchase: the earlier session may be paid or close to expiring.
SAME_PURCHASE_WINDOW = timedelta(minutes=5)
STRIPE_TIMEOUT_SECONDS = 30

SUCCESS_PATH = "/billing/success"
CANCEL_PATH = "/billing/cancel"


class CheckoutError(Exception):
    """No checkout link. `str(error)` is safe to show in Slack; `request_id` is for the log and Stripe support."""

    def __init__(self, message: str, *, temporary: bool, request_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.temporary = temporary
        self.request_id = request_id


@dataclass(frozen=True)
class CheckoutLink:
    url: str
    session_id: str


def build_stripe_client(settings, session: aiohttp.ClientSession | None = None) -> stripe.StripeClient:
    """A StripeClient on aiohttp; pass the app's ClientSession so that closing it closes Stripe's connections."""
    if not settings.stripe_secret_key:
        raise ValueError("STRIPE_SECRET_KEY is not set")
    http_client = stripe.AIOHTTPClient(session=session, timeout=aiohttp.ClientTimeout(total=STRIPE_TIMEOUT_SECONDS))
    return stripe.StripeClient(
        settings.stripe_secret_key,
        base_addresses={"api": settings.stripe_api_base.rstrip("/")},
        http_client=http_client,
        # StripeClient retries nothing by default; retries are safe because every POST has an idempotency key.
        max_network_retries=settings.stripe_max_network_retries,
    )


class Checkout:
    def __init__(
        self,
        engine: AsyncEngine,
        client: stripe.StripeClient,
        *,
        packs: list[CreditPack],
        currency: str,
        public_url: str,
        clock: Callable[[], datetime] = utc_now,
    ):
        self._engine = engine
        self._client = client
        self.packs = list(packs)
        self.currency = currency.lower()
        self._public_url = public_url.rstrip("/")
        self._clock = clock

    async def create_session(
        self, team_id: str, user_id: str | None, pack: CreditPack, *, request_key: str, save_card_for: str | None = None
    ) -> CheckoutLink:
        """A Checkout page for `pack`. The same `request_key` (one button press) within a few minutes
        gives the same session, so a double click cannot open two payments. `save_card_for`: the workspace's
        Stripe Customer, when the payment should also save the card for auto-reload."""
        if pack not in self.packs:
            # A button rendered before the operator changed CREDIT_PACKS.
            raise CheckoutError(
                "That credit pack is no longer offered. Please open the buy menu again.", temporary=False
            )

        try:
            return await self._create_session(team_id, user_id, pack, request_key, save_card_for)
        except SQLAlchemyError:
            log.exception("Could not record a checkout session for team %s", team_id)
            raise CheckoutError(
                "I couldn't open a checkout right now. Please try again in a minute.", temporary=True
            ) from None

    async def _create_session(
        self, team_id: str, user_id: str | None, pack: CreditPack, request_key: str, save_card_for: str | None
    ) -> CheckoutLink:
        request_digest, idempotency_key, expires_at = await self._pin_request(team_id, user_id, pack, request_key)
        params = self._session_params(team_id, user_id, pack, expires_at)
        if save_card_for:
            params["customer"] = save_card_for
            params["payment_intent_data"]["setup_future_usage"] = "off_session"
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params, options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            if not _is_key_in_use(exc):
                # Stripe replays a failed response for the same key too: forget the key, so that
                # pressing the button again really tries again. (Not when the key is busy with an
                # earlier press still in flight: that one will succeed.)
                await self._unpin_request(request_digest, idempotency_key)
            raise _checkout_error(exc, team_id) from None

        if pack.price_id:
            # Stripe priced it: what the session says is what the webhook must see again.
            amount_total, currency = session.amount_total, session.currency
        else:
            amount_total, currency = pack.unit_amount, pack.currency
        async with self._engine.begin() as conn:
            await conn.execute(
                insert_or_ignore(
                    self._engine.dialect.name,
                    checkout_sessions,
                    id=session.id,
                    team_id=team_id,
                    user_id=user_id,
                    credits=pack.credits,
                    amount_total=amount_total,
                    currency=currency,
                    price_id=pack.price_id,
                    status=OPEN,
                    idempotency_key=idempotency_key,
                    created_at=self._clock(),
                    expires_at=expires_at,
                )
            )
        log.info("Checkout session %s opened: team=%s user=%s credits=%d", session.id, team_id, user_id, pack.credits)
        assert session.url is not None  # a hosted session has its page's URL until it completes
        return CheckoutLink(url=session.url, session_id=session.id)

    async def _pin_request(
        self, team_id: str, user_id: str | None, pack: CreditPack, request_key: str
    ) -> tuple[str, str, datetime]:
        """The idempotency key and expiry for this button press, the same for every repeat of it.

        Stripe replays an idempotent request only if its parameters are identical, and expires_at is
        computed from the clock; so the first press stores both and later presses reuse them.
        """
        digest = hashlib.sha256(f"{team_id}\x1f{user_id}\x1f{pack.credits}\x1f{request_key}".encode()).hexdigest()
        now = self._clock()
        fresh = {
            "idempotency_key": f"topup-{digest[:40]}-{int(now.timestamp())}",
            "expires_at": now + SESSION_LIFETIME,
            "created_at": now,
        }
        where = checkout_requests.c.request_key == digest
        select = sa.select(
            checkout_requests.c.idempotency_key, checkout_requests.c.created_at, checkout_requests.c.expires_at
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                insert_or_ignore(self._engine.dialect.name, checkout_requests, request_key=digest, **fresh)
            )
            pinned = (await conn.execute(select.where(where))).one()
            if as_utc(pinned.created_at) <= now - SAME_PURCHASE_WINDOW:
                # Conditional on the old key: of two concurrent late presses only one renews it.
                await conn.execute(
                    sa.update(checkout_requests)
                    .where(where, checkout_requests.c.idempotency_key == pinned.idempotency_key)
                    .values(**fresh)
                )
                pinned = (await conn.execute(select.where(where))).one()
        return digest, pinned.idempotency_key, as_utc(pinned.expires_at)

    async def _unpin_request(self, digest: str, idempotency_key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.delete(checkout_requests).where(
                    checkout_requests.c.request_key == digest, checkout_requests.c.idempotency_key == idempotency_key
                )
            )

    def _session_params(
        self, team_id: str, user_id: str | None, pack: CreditPack, expires_at: datetime
    ) -> SessionCreateParams:
        metadata = {"team_id": team_id, "credits": str(pack.credits)}
        if user_id:
            metadata["user_id"] = user_id
        line_item: SessionCreateParamsLineItem
        if pack.price_id:
            line_item = {"price": pack.price_id, "quantity": 1}
        else:
            assert pack.unit_amount is not None  # a pack without a Stripe Price has an amount (billing/packs.py)
            line_item = {
                "price_data": {
                    "currency": pack.currency,
                    "unit_amount": pack.unit_amount,
                    "product_data": {"name": pack.label},
                },
                "quantity": 1,
            }
        return {
            "mode": "payment",
            "line_items": [line_item],
            "client_reference_id": team_id,
            "metadata": metadata,
            # Copied onto the PaymentIntent so refunds and disputes in the Dashboard show the workspace.
            "payment_intent_data": {"metadata": metadata},
            "expires_at": int(expires_at.timestamp()),
            # {CHECKOUT_SESSION_ID} is filled in by Stripe, not by us.
            "success_url": f"{self._public_url}{SUCCESS_PATH}?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{self._public_url}{CANCEL_PATH}",
        }


def _checkout_error(exc: stripe.StripeError, team_id: str) -> CheckoutError:
    # Stripe's own message goes to the log only: it can name parameters or a (masked) key.
    log.error(
        "Stripe refused to create a checkout session for team %s: %s (status=%s code=%s request_id=%s): %s",
        team_id,
        type(exc).__name__,
        exc.http_status,
        exc.code,
        exc.request_id,
        exc.user_message,
    )
    temporary = (
        isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError))
        or _is_key_in_use(exc)
        or (exc.http_status is not None and exc.http_status >= 500)
    )
    if temporary:
        message = "Stripe is not responding right now, so I couldn't open a checkout. Please try again in a minute."
    else:
        message = "I couldn't open a checkout because payments are not set up correctly. Please tell a workspace admin."
    return CheckoutError(message, temporary=temporary, request_id=exc.request_id)


def _is_key_in_use(exc: stripe.StripeError) -> bool:
    """409: the same idempotency key is being processed by a concurrent request (a fast double click)."""
    return exc.http_status == 409
