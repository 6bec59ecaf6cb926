"""The bot's own tables (mirroring storage/migrations): event de-duplication and conversation history."""

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
