"""Auto-reload: a workspace's rule (below X buy pack P, at most M a month, the saved card) and its reloads.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "auto_reload_settings",
        sa.Column("team_id", sa.String(32), primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("below", sa.BigInteger(), nullable=False),
        sa.Column("pack_credits", sa.BigInteger(), nullable=False),
        sa.Column("max_per_month", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(32), nullable=True),
        sa.Column("customer_id", sa.String(255), nullable=True),  # the workspace's Stripe Customer
        sa.Column("payment_method", sa.String(255), nullable=True),  # saved by a Checkout purchase for off-session use
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "auto_reloads",
        sa.Column("id", sa.String(64), primary_key=True),  # also the PaymentIntent's idempotency key
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # pending, succeeded, failed, error
        sa.Column("payment_intent", sa.String(255), nullable=True),
        sa.Column("failure", sa.String(64), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
    )
    op.create_index("ix_auto_reloads_team_created", "auto_reloads", ["team_id", "created_at"])
    # Never two reloads in flight for a workspace, whatever the processes do.
    op.create_index(
        "ux_auto_reloads_one_pending",
        "auto_reloads",
        ["team_id"],
        unique=True,
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ux_auto_reloads_one_pending", table_name="auto_reloads")
    op.drop_index("ix_auto_reloads_team_created", table_name="auto_reloads")
    op.drop_table("auto_reloads")
    op.drop_table("auto_reload_settings")
