"""Stripe top-ups: checkout requests and sessions, payment facts (refunds, disputes), processed events.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)
STRIPE_ID = sa.String(255)  # Stripe ids are documented as strings of up to 255 characters


def upgrade() -> None:
    # One row per buy-button press (hashed request key): pins the idempotency key and expires_at so
    # that a double click sends Stripe byte-identical parameters and gets the same session back.
    op.create_table(
        "stripe_checkout_requests",
        sa.Column("request_key", sa.String(64), primary_key=True),
        sa.Column("idempotency_key", STRIPE_ID, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
    )

    op.create_table(
        "stripe_checkout_sessions",
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
        # Credits taken back by refunds and disputes (a won dispute gives some back).
        sa.Column("credits_reversed", sa.BigInteger(), nullable=False, server_default="0"),
        # Each change of credits_reversed is one numbered ledger entry; a step stays "pending" until
        # the ledger has it, so a crash between the two is finished by the next delivery.
        sa.Column("adjustment_seq", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("pending_adjustment", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("pending_kind", sa.String(16), nullable=True),
        sa.CheckConstraint("credits > 0", name="ck_stripe_checkout_sessions_credits_positive"),
        sa.CheckConstraint("amount_total >= 0", name="ck_stripe_checkout_sessions_amount_not_negative"),
    )
    op.create_index("ix_stripe_checkout_sessions_payment_intent", "stripe_checkout_sessions", ["payment_intent"])
    op.create_index("ix_stripe_checkout_sessions_team_created", "stripe_checkout_sessions", ["team_id", "created_at"])

    # What Stripe told us about a payment after checkout, merged monotonically so that events applied
    # in any order give the same result. Keyed by PaymentIntent: charge and dispute events carry it.
    op.create_table(
        "stripe_payments",
        sa.Column("payment_intent", STRIPE_ID, primary_key=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("dispute_status", sa.String(32), nullable=True),
        sa.Column("updated_at", WHEN, nullable=False),
    )

    op.create_table(
        "stripe_events",
        sa.Column("id", STRIPE_ID, primary_key=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
    )
    op.create_index("ix_stripe_events_received_at", "stripe_events", ["received_at"])


def downgrade() -> None:
    op.drop_table("stripe_events")
    op.drop_table("stripe_payments")
    op.drop_table("stripe_checkout_sessions")
    op.drop_table("stripe_checkout_requests")
