"""The bot's own tables (mirroring storage/migrations): event de-duplication, conversation history, org
workspaces, answers in flight and the processes writing them."""

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Integer, MetaData, String, Table, Text

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
    Column("files", JSON(), nullable=True),  # references to the files the turn shared (0009)
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

# A reply being written, from the moment its question is claimed until it is final in Slack, so that a
# process that dies mid-answer leaves behind enough to finish it (bot/inflight.py).
answers_in_flight = Table(
    "answers_in_flight",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("team_id", String(32), nullable=False),
    Column("channel_id", String(32), nullable=False),
    Column("thread_ts", String(32), nullable=True),
    Column("user_id", String(32), nullable=True),
    Column("reservation_id", String(64), nullable=True),
    Column("owner", String(64), nullable=False),
    Column("messages", Text(), nullable=False),
    Column("shown_text", Text(), nullable=False),
    Column("input_tokens", BigInteger(), nullable=False),
    Column("cache_creation_input_tokens", BigInteger(), nullable=False),
    Column("cache_read_input_tokens", BigInteger(), nullable=False),
    Column("output_tokens", BigInteger(), nullable=False),
    Column("settled", Boolean(), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("stop_requested_by", String(32), nullable=True),
    Column("outcome_text", Text(), nullable=True),
    Column("web_search_requests", BigInteger(), nullable=True),  # 0010: searches so far, charged by recovery too
    Column("model", String(64), nullable=True),  # 0010: the answer's model (None in rows from before: CLAUDE_MODEL)
)

# One rating per person and answer (the latest click counts).
answer_feedback = Table(
    "answer_feedback",
    metadata,
    Column("answer_id", String(128), primary_key=True),
    Column("user_id", String(32), primary_key=True),
    Column("team_id", String(32), nullable=False),
    Column("channel_id", String(32), nullable=True),
    Column("message_ts", String(32), nullable=True),
    Column("rating", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Each running bot process and when it last proved it is alive.
bot_processes = Table(
    "bot_processes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer(), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

# What workspace admins chose for answers, per workspace (channel_id "") and channel; every change audited (0010).
answer_settings = Table(
    "answer_settings",
    metadata,
    Column("team_id", String(32), primary_key=True),
    Column("channel_id", String(32), primary_key=True),
    Column("model", String(64), nullable=True),
    Column("system_prompt", Text(), nullable=True),
    Column("web_search", Boolean(), nullable=True),
    Column("updated_by", String(32), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

answer_settings_audit = Table(
    "answer_settings_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("team_id", String(32), nullable=False),
    Column("channel_id", String(32), nullable=False),
    Column("setting", String(32), nullable=False),
    Column("old_value", Text(), nullable=True),
    Column("new_value", Text(), nullable=True),
    Column("changed_by", String(32), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)
