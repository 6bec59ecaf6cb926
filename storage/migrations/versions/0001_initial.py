"""Bot conversations and event de-duplication; credit accounts, reservations and the ledger.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "slack_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
    )
    op.create_index("ix_slack_events_received_at", "slack_events", ["received_at"])

    op.create_table(
        "conversation_turns",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("thread_ts", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
    )
    op.create_index("ix_conversation_turns_thread", "conversation_turns", ["team_id", "channel_id", "thread_ts", "id"])
    op.create_index("ix_conversation_turns_created_at", "conversation_turns", ["created_at"])

    op.create_table(
        "credit_accounts",
        sa.Column("team_id", sa.String(32), primary_key=True),
        sa.Column("balance", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reserved", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("low_balance_notified", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", WHEN, nullable=False),
        sa.CheckConstraint("reserved >= 0", name="ck_credit_accounts_reserved_not_negative"),
    )

    op.create_table(
        "credit_ledger",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("credit_accounts.team_id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.UniqueConstraint("source", "external_id", name="uq_credit_ledger_source_external_id"),
    )
    op.create_index("ix_credit_ledger_team_created", "credit_ledger", ["team_id", "created_at"])

    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("credit_accounts.team_id"), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("closed_at", WHEN, nullable=True),
        sa.CheckConstraint("amount >= 0", name="ck_credit_reservations_amount_not_negative"),
    )
    op.create_index("ix_credit_reservations_open", "credit_reservations", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_table("credit_reservations")
    op.drop_table("credit_ledger")
    op.drop_table("credit_accounts")
    op.drop_table("conversation_turns")
    op.drop_table("slack_events")
