"""Answers in flight survive their process: a durable record of each reply until it is final, and the
heartbeats that tell which processes are still alive to finish theirs.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "answers_in_flight",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("thread_ts", sa.String(32), nullable=True),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("reservation_id", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("messages", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("shown_text", sa.Text(), nullable=False, server_default=""),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cache_creation_input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cache_read_input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("settled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_index("ix_answers_in_flight_owner", "answers_in_flight", ["owner"])
    op.create_table(
        "bot_processes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("heartbeat_at", WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bot_processes")
    op.drop_index("ix_answers_in_flight_owner", table_name="answers_in_flight")
    op.drop_table("answers_in_flight")
