"""What workspace admins chose for answers (model, system prompt, web search), for the workspace and per
channel, and the audit trail of every change.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "answer_settings",
        sa.Column("team_id", sa.String(32), primary_key=True),
        sa.Column("channel_id", sa.String(32), primary_key=True),  # "" for the whole workspace
        sa.Column("model", sa.String(64), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("web_search", sa.Boolean(), nullable=True),
        sa.Column("updated_by", sa.String(32), nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "answer_settings_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("setting", sa.String(32), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("changed_by", sa.String(32), nullable=False),
        sa.Column("changed_at", WHEN, nullable=False),
    )
    op.create_index("answer_settings_audit_team", "answer_settings_audit", ["team_id", "changed_at"])
    # The model an answer in flight uses: recovery charges its usage at that model's prices.
    op.add_column("answers_in_flight", sa.Column("model", sa.String(64), nullable=True))
    # Its web searches so far: recovery charges them too.
    op.add_column("answers_in_flight", sa.Column("web_search_requests", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("answers_in_flight", "web_search_requests")
    op.drop_column("answers_in_flight", "model")
    op.drop_index("answer_settings_audit_team", table_name="answer_settings_audit")
    op.drop_table("answer_settings_audit")
    op.drop_table("answer_settings")
