"""Spending limits per user, per channel and a workspace default, checked with every reservation.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "spending_limits",
        sa.Column("team_id", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(8), primary_key=True),  # user, channel, default
        sa.Column("subject", sa.String(32), primary_key=True),  # the user or channel id; "" for the default
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("set_by", sa.String(32), nullable=True),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.CheckConstraint("scope IN ('user', 'channel', 'default')", name="ck_spending_limits_scope"),
        sa.CheckConstraint("period IN ('day', 'month')", name="ck_spending_limits_period"),
        sa.CheckConstraint("credits >= 0", name="ck_spending_limits_credits"),
    )
    # A channel's spending in a period: the reservation records where the question was asked.
    with op.batch_alter_table("credit_reservations") as batch:
        batch.add_column(sa.Column("channel_id", sa.String(32), nullable=True))
    op.create_index("ix_credit_reservations_team_created", "credit_reservations", ["team_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_credit_reservations_team_created", table_name="credit_reservations")
    with op.batch_alter_table("credit_reservations") as batch:
        batch.drop_column("channel_id")
    op.drop_table("spending_limits")
