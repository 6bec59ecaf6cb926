"""SQLAlchemy Core tables for credits, mirroring storage/migrations/versions/0001_initial.py.

The migration owns the schema; these objects only let billing build statements. Keep both in step.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

metadata = sa.MetaData()

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)

credit_accounts = sa.Table(
    "credit_accounts",
    metadata,
    sa.Column("team_id", sa.String(32), primary_key=True),
    sa.Column("balance", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("reserved", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("low_balance_notified", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", WHEN, nullable=False),
    sa.CheckConstraint("reserved >= 0", name="ck_credit_accounts_reserved_not_negative"),
)

credit_ledger = sa.Table(
    "credit_ledger",
    metadata,
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

credit_reservations = sa.Table(
    "credit_reservations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("team_id", sa.String(32), sa.ForeignKey("credit_accounts.team_id"), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=True),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("charged", sa.BigInteger(), nullable=True),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("expires_at", WHEN, nullable=False),
    sa.Column("closed_at", WHEN, nullable=True),
    sa.Column("channel_id", sa.String(32), nullable=True),  # 0007
    sa.CheckConstraint("amount >= 0", name="ck_credit_reservations_amount_not_negative"),
)


answer_usage = sa.Table(  # storage/migrations/versions/0006_answer_usage.py
    "answer_usage",
    metadata,
    sa.Column("reservation_id", sa.String(64), primary_key=True),
    sa.Column("team_id", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=True),
    sa.Column("channel_id", sa.String(32), nullable=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("input_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cache_creation_input_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cache_read_input_tokens", sa.BigInteger(), nullable=False),
    sa.Column("output_tokens", sa.BigInteger(), nullable=False),
    sa.Column("credits", sa.BigInteger(), nullable=False),
    sa.Column("created_at", WHEN, nullable=False),
)


spending_limits = sa.Table(  # storage/migrations/versions/0007_spending_limits.py
    "spending_limits",
    metadata,
    sa.Column("team_id", sa.String(32), primary_key=True),
    sa.Column("scope", sa.String(8), primary_key=True),
    sa.Column("subject", sa.String(32), primary_key=True),
    sa.Column("credits", sa.BigInteger(), nullable=False),
    sa.Column("period", sa.String(8), nullable=False),
    sa.Column("set_by", sa.String(32), nullable=True),
    sa.Column("updated_at", WHEN, nullable=False),
)


def insert_once(connection: AsyncConnection, table: sa.Table, *conflict_columns: str):
    """INSERT ... ON CONFLICT (conflict_columns) DO NOTHING, in the connection's dialect.

    With RETURNING, an empty result means the row was already there: that is how every effect
    keyed by a unique constraint happens exactly once, even under concurrent deliveries.
    """
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
