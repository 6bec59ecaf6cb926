"""Shared set-up for the Stripe top-up tests (no tests here; the test_billing_stripe_* modules import it).

Everything is real except Stripe: the SDK talks to FakeStripe over HTTP, webhooks are signed like
Stripe signs them and POSTed to the aiohttp routes, credits land in a real Credits on the `engine`
fixture (a SQLite file, then PostgreSQL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from billing.credits import Credits
from billing.packs import find_pack, parse_credit_packs
from billing.stripe_checkout import Checkout, CheckoutLink, build_stripe_client
from billing.stripe_tables import checkout_sessions, events
from billing.stripe_web import stripe_routes
from billing.stripe_webhook import StripeWebhook
from billing.tables import credit_ledger
from config import BillingSettings
from tests.fakes.stripe import FakeStripe, sign

SECRET_KEY = "sk_test_harness_4242424242"
WEBHOOK_SECRET = "whsec_harness_secret"
PUBLIC_URL = "https://bot.example.com"
TEAM, USER = "T0TEAM", "U0BUYER"


class RecordingNotifier:
    def __init__(self, fail: bool = False):
        self.granted: list[tuple] = []
        self.failed: list[tuple] = []
        self.fail = fail

    async def purchase_granted(self, team_id, user_id, credits, balance, receipt_url=None):
        self.granted.append((team_id, user_id, credits, balance))
        if self.fail:
            raise RuntimeError("Slack is down")

    async def payment_failed(self, team_id, user_id):
        self.failed.append((team_id, user_id))


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@dataclass
class StripeHarness:
    fake: FakeStripe
    engine: object
    credits: Credits
    checkout: Checkout
    webhook: StripeWebhook
    notifier: RecordingNotifier
    http: TestClient
    clock: Clock

    async def buy(
        self, credits: int = 500, *, request_key: str = "press-1", team: str = TEAM, user: str = USER
    ) -> CheckoutLink:
        return await self.checkout.create_session(
            team, user, find_pack(self.checkout.packs, credits), request_key=request_key
        )

    async def deliver(
        self,
        event: dict | bytes,
        *,
        secret: str = WEBHOOK_SECRET,
        timestamp: int | None = None,
        signature: str | bool | None = True,
    ) -> tuple[int, str]:
        """POST an event to /stripe/webhook the way Stripe does; signature=None sends no header."""
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if signature is True:
            headers["Stripe-Signature"] = sign(payload, secret, timestamp)
        elif signature:
            headers["Stripe-Signature"] = signature
        response = await self.http.post("/stripe/webhook", data=payload, headers=headers)
        return response.status, await response.text()

    async def balance(self, team: str = TEAM) -> int:
        return (await self.credits.balance(team)).balance

    async def ledger(self) -> list:
        async with self.engine.connect() as conn:
            return list((await conn.execute(sa.select(credit_ledger).order_by(credit_ledger.c.id))).all())

    async def session(self, session_id: str):
        return await session_row(self.engine, session_id)

    async def events_recorded(self) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()


async def session_row(engine, session_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(checkout_sessions).where(checkout_sessions.c.id == session_id))).one()


def billing_settings(api_base: str, **overrides) -> BillingSettings:
    values = dict(
        stripe_secret_key=SECRET_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=api_base,
        public_url=PUBLIC_URL,
        stripe_max_network_retries=0,
        credit_packs="500:5.00,2000:18.00",
        stripe_currency="usd",
    )
    values.update(overrides)
    return BillingSettings(_env_file=None, **values)


def make_credits(engine) -> Credits:
    return Credits(engine)


@pytest.fixture
async def stripe_harness(engine):
    clock = Clock()
    async with FakeStripe(prices={"price_1Pack": (900, "usd")}) as fake, aiohttp.ClientSession() as session:
        settings = billing_settings(fake.api_base)
        client = build_stripe_client(settings, session)
        credits = make_credits(engine)
        checkout = Checkout(
            engine,
            client,
            packs=parse_credit_packs(settings.credit_packs, settings.stripe_currency),
            currency=settings.stripe_currency,
            public_url=settings.public_url,
            clock=clock,
        )
        notifier = RecordingNotifier()
        webhook = StripeWebhook(engine, credits, webhook_secret=WEBHOOK_SECRET, notify=notifier, clock=clock)
        app = web.Application()
        app.add_routes(stripe_routes(webhook))
        async with TestClient(TestServer(app)) as http:
            yield StripeHarness(fake, engine, credits, checkout, webhook, notifier, http, clock)
