"""Stopping an answer from any process, outcomes that survive a restart, and what people thought of the answers.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Who asked to stop the answer, for the process writing it to notice (it may not be the one that got the click).
    with op.batch_alter_table("answers_in_flight") as batch:
        batch.add_column(sa.Column("stop_requested_by", sa.String(32), nullable=True))
        # A one-message outcome about to be posted (help, "not enough credits"): what to post if the process dies.
        batch.add_column(sa.Column("outcome_text", sa.Text(), nullable=True))
    op.create_table(
        "answer_feedback",
        sa.Column("answer_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=True),
        sa.Column("message_ts", sa.String(32), nullable=True),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.CheckConstraint("rating IN ('good', 'bad')", name="ck_answer_feedback_rating"),
    )
    op.create_index("ix_answer_feedback_team_updated", "answer_feedback", ["team_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_answer_feedback_team_updated", table_name="answer_feedback")
    op.drop_table("answer_feedback")
    with op.batch_alter_table("answers_in_flight") as batch:
        batch.drop_column("outcome_text")
        batch.drop_column("stop_requested_by")
