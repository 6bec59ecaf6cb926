"""Spending limits: how many credits a user, or a channel, may spend per calendar day or month (UTC).

A user's own limit replaces the workspace's default for them; a channel's limit applies on top. What
counts toward a limit is every reservation of the period: a held one for what it holds, a settled one
for what it was charged. `check` runs inside the reservation's transaction after the account row is
locked (PostgreSQL) or the write lock taken (SQLite, BEGIN IMMEDIATE), so two answers of one workspace
are checked one after the other and cannot both squeeze under a limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.ledger import utc
from billing.tables import credit_reservations as reservations
from billing.tables import spending_limits

SCOPES = ("user", "channel", "default")
PERIODS = ("day", "month")


@dataclass(frozen=True)
class SpendingLimit:
    scope: str  # user, channel or default
    subject: str  # the user's or channel's id; "" for the default
    credits: int
    period: str  # day or month, in UTC
    set_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class OverLimit:
    """The answer would take `limit` past its credits for the period: nothing was held."""

    team_id: str
    limit: SpendingLimit
    used: int  # spent and held in the period so far
    needed: int  # what the answer would hold
    resets_at: datetime


def period_start(period: str, now: datetime) -> datetime:
    now = utc(now)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    return day if period == "day" else day.replace(day=1)


def period_end(period: str, now: datetime) -> datetime:
    start = period_start(period, now)
    if period == "day":
        return start + timedelta(days=1)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def _spent():
    held_or_charged = sa.case(
        (reservations.c.status == "held", reservations.c.amount), else_=sa.func.coalesce(reservations.c.charged, 0)
    )
    return sa.func.coalesce(sa.func.sum(held_or_charged), 0)


async def used(
    connection: AsyncConnection, team_id: str, limit: SpendingLimit, now: datetime, *, user_id: str | None = None
) -> int:
    """What the limit's subject (or `user_id`, for the default) has spent and holds in the current period."""
    whose = reservations.c.channel_id if limit.scope == "channel" else reservations.c.user_id
    subject = user_id if limit.scope == "default" else limit.subject
    if subject is None:
        return 0
    return int(
        (
            await connection.execute(
                sa.select(_spent()).where(
                    reservations.c.team_id == team_id,
                    whose == subject,
                    reservations.c.created_at >= period_start(limit.period, now),
                )
            )
        ).scalar_one()
    )


async def check(
    connection: AsyncConnection, team_id: str, user_id: str | None, channel_id: str | None, amount: int, now: datetime
) -> OverLimit | None:
    """The first limit that holding `amount` more would exceed, or None."""
    found = await applicable(connection, team_id, user_id, channel_id)
    for limit in found:
        spent = await used(connection, team_id, limit, now, user_id=user_id)
        if spent + amount > limit.credits:
            return OverLimit(team_id, limit, used=spent, needed=amount, resets_at=period_end(limit.period, now))
    return None


async def applicable(
    connection: AsyncConnection, team_id: str, user_id: str | None, channel_id: str | None
) -> list[SpendingLimit]:
    subjects = [sa.and_(spending_limits.c.scope == "default")]
    if user_id:
        subjects.append(sa.and_(spending_limits.c.scope == "user", spending_limits.c.subject == user_id))
    if channel_id:
        subjects.append(sa.and_(spending_limits.c.scope == "channel", spending_limits.c.subject == channel_id))
    rows = (
        await connection.execute(
            sa.select(spending_limits).where(spending_limits.c.team_id == team_id, sa.or_(*subjects))
        )
    ).all()
    limits = {row.scope: _from_row(row) for row in rows}
    if "user" in limits:
        limits.pop("default", None)  # a user's own limit replaces the default
    return [limits[scope] for scope in SCOPES if scope in limits]


async def set_limit(connection: AsyncConnection, team_id: str, limit: SpendingLimit, now: datetime) -> None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    values = {"credits": limit.credits, "period": limit.period, "set_by": limit.set_by, "updated_at": utc(now)}
    statement = dialect.insert(spending_limits).values(
        team_id=team_id, scope=limit.scope, subject=limit.subject, **values
    )
    await connection.execute(
        statement.on_conflict_do_update(index_elements=["team_id", "scope", "subject"], set_=values)
    )


async def remove_limit(connection: AsyncConnection, team_id: str, scope: str, subject: str) -> bool:
    result = await connection.execute(
        sa.delete(spending_limits).where(
            spending_limits.c.team_id == team_id, spending_limits.c.scope == scope, spending_limits.c.subject == subject
        )
    )
    return result.rowcount > 0


async def all_limits(connection: AsyncConnection, team_id: str) -> list[SpendingLimit]:
    rows = (
        await connection.execute(
            sa.select(spending_limits)
            .where(spending_limits.c.team_id == team_id)
            .order_by(spending_limits.c.scope, spending_limits.c.subject)
        )
    ).all()
    return [_from_row(row) for row in rows]


def _from_row(row) -> SpendingLimit:
    return SpendingLimit(
        scope=row.scope,
        subject=row.subject,
        credits=row.credits,
        period=row.period,
        set_by=row.set_by,
        updated_at=utc(row.updated_at),
    )
