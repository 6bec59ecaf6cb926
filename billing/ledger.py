"""The statements every balance change is made of, run inside a caller's transaction.

Rules they keep (see the project's standards):
- a balance changes only through one conditional, relative UPDATE — never a value read and written back;
- the ledger row is inserted after that UPDATE, in the same transaction: on PostgreSQL the account
  row stays locked until commit, so a team's ledger ids follow the order its balance changed in;
- each effect is keyed by UNIQUE(source, external_id) and inserted with ON CONFLICT DO NOTHING, so
  a retried or concurrent delivery of the same effect changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.tables import credit_accounts as accounts
from billing.tables import credit_ledger as ledger
from billing.tables import insert_once

KINDS = frozenset({"grant", "purchase", "usage", "release", "refund", "reversal", "adjustment", "trial"})


def utc(moment: datetime) -> datetime:
    """Aware UTC. SQLite stores datetimes as text without a zone (and returns them naive), so every
    stored or compared moment must be UTC for text order to be time order."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


async def open_account(connection: AsyncConnection, team_id: str, now: datetime) -> bool:
    """Create the team's account unless it exists; True when this call created it."""
    statement = (
        insert_once(connection, accounts, "team_id")
        .values(team_id=team_id, balance=0, reserved=0, low_balance_notified=False, created_at=utc(now))
        .returning(accounts.c.team_id)
    )
    return (await connection.execute(statement)).first() is not None


async def record(
    connection: AsyncConnection,
    *,
    team_id: str,
    kind: str,
    amount: int,
    balance_after: int,
    source: str,
    external_id: str,
    now: datetime,
    user_id: str | None = None,
    memo: str | None = None,
) -> bool:
    """Append a ledger row; False (and nothing written) when (source, external_id) is already there."""
    if kind not in KINDS:
        raise ValueError(f"unknown ledger kind {kind!r}; expected one of {sorted(KINDS)}")
    statement = (
        insert_once(connection, ledger, "source", "external_id")
        .values(
            team_id=team_id,
            kind=kind,
            amount=amount,
            balance_after=balance_after,
            user_id=user_id,
            source=source,
            external_id=external_id,
            memo=memo,
            created_at=utc(now),
        )
        .returning(ledger.c.id)
    )
    return (await connection.execute(statement)).first() is not None


async def apply_once(
    connection: AsyncConnection,
    *,
    team_id: str,
    amount: int,
    kind: str,
    source: str,
    external_id: str,
    now: datetime,
    low_balance_threshold: int,
    user_id: str | None = None,
    memo: str | None = None,
) -> int | None:
    """Add `amount` (may be negative) to an existing account and record it, once per (source, external_id).

    Returns the new balance, or None when the effect was recorded before: then the savepoint undoes
    the UPDATE, because the ledger row that detects the duplicate can only be inserted after it.
    """
    changes: dict = {"balance": accounts.c.balance + amount}
    if amount > 0:
        # A top-up that lifts the available credits to the threshold re-arms the low-balance notice.
        changes["low_balance_notified"] = sa.case(
            (accounts.c.balance - accounts.c.reserved + amount >= low_balance_threshold, sa.false()),
            else_=accounts.c.low_balance_notified,
        )
    async with connection.begin_nested() as savepoint:
        balance = (
            await connection.execute(
                sa.update(accounts).where(accounts.c.team_id == team_id).values(**changes).returning(accounts.c.balance)
            )
        ).scalar_one()
        recorded = await record(
            connection,
            team_id=team_id,
            kind=kind,
            amount=amount,
            balance_after=balance,
            source=source,
            external_id=external_id,
            now=now,
            user_id=user_id,
            memo=memo,
        )
        if not recorded:
            await savepoint.rollback()
            return None
    return balance


async def flag_low_balance(connection: AsyncConnection, team_id: str, threshold: int) -> bool:
    """Mark the account as told that its available credits are low; True only for the call that flipped the flag."""
    statement = (
        sa.update(accounts)
        .where(
            accounts.c.team_id == team_id,
            accounts.c.low_balance_notified.is_(False),
            accounts.c.balance - accounts.c.reserved < threshold,
        )
        .values(low_balance_notified=True)
        .returning(accounts.c.team_id)
    )
    return (await connection.execute(statement)).first() is not None


async def read_balance(connection: AsyncConnection, team_id: str) -> tuple[int, int] | None:
    """(balance, reserved), or None for a team without an account."""
    row = (
        await connection.execute(
            sa.select(accounts.c.balance, accounts.c.reserved).where(accounts.c.team_id == team_id)
        )
    ).first()
    return None if row is None else (row.balance, row.reserved)


async def read_existing_balance(connection: AsyncConnection, team_id: str) -> tuple[int, int]:
    """(balance, reserved) of a team whose account was opened before (accounts are never deleted)."""
    found = await read_balance(connection, team_id)
    if found is None:
        raise LookupError(f"no credit account for team {team_id}")
    return found
