"""SQLAlchemy Core mirror of migration 0002_stripe (the migration is the source of truth), and the
statements that keep the payment facts monotonic."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

metadata = sa.MetaData()

WHEN = sa.DateTime(timezone=True)
STRIPE_ID = sa.String(255)

checkout_requests = sa.Table(
    "stripe_checkout_requests",
    metadata,
    sa.Column("request_key", sa.String(64), primary_key=True),
    sa.Column("idempotency_key", STRIPE_ID, nullable=False),
    sa.Column("expires_at", WHEN, nullable=False),
    sa.Column("created_at", WHEN, nullable=False),
)

checkout_sessions = sa.Table(
    "stripe_checkout_sessions",
    metadata,
    sa.Column("id", STRIPE_ID, primary_key=True),
    sa.Column("team_id", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=True),
    sa.Column("credits", sa.BigInteger(), nullable=False),
    sa.Column("amount_total", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("price_id", STRIPE_ID, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payment_intent", STRIPE_ID, nullable=True),
    sa.Column("idempotency_key", STRIPE_ID, nullable=False),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("expires_at", WHEN, nullable=False),
    sa.Column("paid_at", WHEN, nullable=True),
    sa.Column("granted_at", WHEN, nullable=True),
    sa.Column("credits_reversed", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("adjustment_seq", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("pending_adjustment", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("pending_kind", sa.String(16), nullable=True),
)

payments = sa.Table(
    "stripe_payments",
    metadata,
    sa.Column("payment_intent", STRIPE_ID, primary_key=True),
    sa.Column("amount", sa.BigInteger(), nullable=True),
    sa.Column("amount_refunded", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("dispute_status", sa.String(32), nullable=True),
    sa.Column("updated_at", WHEN, nullable=False),
)

events = sa.Table(
    "stripe_events",
    metadata,
    sa.Column("id", STRIPE_ID, primary_key=True),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("received_at", WHEN, nullable=False),
)

# Session statuses. "paid" means Stripe confirmed the money and the amount matched: the team is
# entitled to the credits (granted_at says when the ledger got them).
OPEN, UNPAID, PAID, FAILED, EXPIRED, MISMATCH = "open", "unpaid", "paid", "failed", "expired", "mismatch"

# stripe_payments.dispute_status: NULL (never disputed), then open, then won or lost for good.
DISPUTE_OPEN, DISPUTE_WON, DISPUTE_LOST = "open", "won", "lost"


def insert_or_ignore(dialect_name: str, table: sa.Table, **values):
    """INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL (the two dialects the app supports)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).values(**values).on_conflict_do_nothing()


async def merge_refund(
    conn: AsyncConnection, payment_intent: str, *, amount: int, amount_refunded: int, now: datetime
) -> None:
    """Record a charge's refunded total. It only grows: an older event delivered late changes nothing. The
    charge's amount is noted once, for the record; refunds are reckoned against the purchase's own amount."""
    await _ensure_payment(conn, payment_intent, now)
    current = payments.c.amount_refunded
    await conn.execute(
        sa.update(payments)
        .where(payments.c.payment_intent == payment_intent)
        .values(
            amount=sa.func.coalesce(payments.c.amount, amount),
            amount_refunded=sa.case((current < amount_refunded, amount_refunded), else_=current),
            updated_at=now,
        )
    )


async def merge_dispute(conn: AsyncConnection, payment_intent: str, status: str, *, now: datetime) -> None:
    """Record a dispute's state. Closed (won/lost) is final: a late "created" never reopens it."""
    await _ensure_payment(conn, payment_intent, now)
    replaceable: sa.ColumnElement[bool] = payments.c.dispute_status.is_(None)
    if status != DISPUTE_OPEN:
        replaceable = replaceable | (payments.c.dispute_status == DISPUTE_OPEN)
    await conn.execute(
        sa.update(payments)
        .where(payments.c.payment_intent == payment_intent, replaceable)
        .values(dispute_status=status, updated_at=now)
    )


async def _ensure_payment(conn: AsyncConnection, payment_intent: str, now: datetime) -> None:
    await conn.execute(
        insert_or_ignore(conn.dialect.name, payments, payment_intent=payment_intent, amount_refunded=0, updated_at=now)
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a timezone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


auto_reload_settings = sa.Table(  # storage/migrations/versions/0008_auto_reload.py
    "auto_reload_settings",
    metadata,
    sa.Column("team_id", sa.String(32), primary_key=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("below", sa.BigInteger(), nullable=False),
    sa.Column("pack_credits", sa.BigInteger(), nullable=False),
    sa.Column("max_per_month", sa.Integer(), nullable=False),
    sa.Column("set_by", sa.String(32), nullable=True),
    sa.Column("customer_id", STRIPE_ID, nullable=True),
    sa.Column("payment_method", STRIPE_ID, nullable=True),
    sa.Column("updated_at", WHEN, nullable=False),
)

auto_reloads = sa.Table(
    "auto_reloads",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("team_id", sa.String(32), nullable=False),
    sa.Column("credits", sa.BigInteger(), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payment_intent", STRIPE_ID, nullable=True),
    sa.Column("failure", sa.String(64), nullable=True),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("finished_at", WHEN, nullable=True),
)
