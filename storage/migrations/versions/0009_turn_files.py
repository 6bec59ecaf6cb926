"""The files a conversation's turns shared: references (id, name, type, size, Slack URL, token estimate), so that
follow-ups show Claude the same files again. The files themselves stay in Slack.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversation_turns", sa.Column("files", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("conversation_turns", "files")
