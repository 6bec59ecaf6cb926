"""The bot's own tables (mirroring storage/migrations): event de-duplication, conversation history, org workspaces."""

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text

metadata = MetaData()

slack_events = Table(
    "slack_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("team_id", String(32), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

conversation_turns = Table(
    "conversation_turns",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("team_id", String(32), nullable=False),
    Column("channel_id", String(32), nullable=False),
    Column("thread_ts", String(32), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text(), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Which workspaces belong to an Enterprise Grid org that installed the app org-wide (its installation
# has no team id), so that work no Slack request started can still find the org's token.
slack_org_workspaces = Table(
    "slack_org_workspaces",
    metadata,
    Column("team_id", String(32), primary_key=True),
    Column("enterprise_id", String(32), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)
