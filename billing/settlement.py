"""How a reservation leaves "held": settled for what the answer cost, or expired by the sweeper.

Both run inside the caller's transaction. The claim is always one conditional UPDATE on the
reservation (`WHERE status = 'held'`), so of settle, release and the sweeper exactly one wins,
and a retried settle finds the reservation closed and charges nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.ledger import flag_low_balance, read_existing_balance, record, utc
from billing.results import AnswerUsage, Settlement
from billing.tables import answer_usage
from billing.tables import credit_accounts as accounts
from billing.tables import credit_reservations as reservations

log = logging.getLogger(__name__)

ANSWER_SOURCE = "answer"
EXPIRED_SOURCE = "reservation-expired"


class UnknownReservationError(LookupError):
    """settle() or release() was given an id that reserve() never created."""


async def settle(
    connection: AsyncConnection,
    reservation_id: str,
    charge: int,
    now: datetime,
    low_balance_threshold: int,
    usage: AnswerUsage | None = None,
) -> Settlement:
    capped = sa.case((reservations.c.amount < charge, reservations.c.amount), else_=charge)
    claimed = (
        await connection.execute(
            sa.update(reservations)
            .where(reservations.c.id == reservation_id, reservations.c.status == "held")
            .values(status="settled", charged=capped, closed_at=now)
            .returning(reservations.c.team_id, reservations.c.user_id, reservations.c.amount, reservations.c.charged)
        )
    ).first()
    if claimed is None:
        return await _settle_closed(connection, reservation_id, charge, now, low_balance_threshold, usage)
    if claimed.charged < charge:
        # The reservation was the worst case; going past it means the estimate was wrong, and
        # charging more could take the balance below zero.
        log.warning(
            "reservation %s: charge of %d credits exceeds the %d reserved; charging %d",
            reservation_id,
            charge,
            claimed.amount,
            claimed.charged,
        )
    balance = (
        await connection.execute(
            sa.update(accounts)
            .where(accounts.c.team_id == claimed.team_id)
            .values(reserved=accounts.c.reserved - claimed.amount, balance=accounts.c.balance - claimed.charged)
            .returning(accounts.c.balance)
        )
    ).scalar_one()
    return await _record_answer(
        connection,
        reservation_id,
        claimed.team_id,
        claimed.user_id,
        claimed.charged,
        balance,
        now,
        low_balance_threshold,
        usage=usage,
    )


async def _settle_closed(
    connection: AsyncConnection,
    reservation_id: str,
    charge: int,
    now: datetime,
    low_balance_threshold: int,
    usage: AnswerUsage | None,
) -> Settlement:
    """Not held any more: settled or released (nothing to do), or expired (charge what is available)."""
    expired = (
        await connection.execute(
            sa.update(reservations)
            .where(reservations.c.id == reservation_id, reservations.c.status == "expired")
            .values(status="settled", closed_at=now)
            .returning(reservations.c.team_id, reservations.c.user_id)
        )
    ).first()
    if expired is None:
        row = (
            await connection.execute(
                sa.select(reservations.c.team_id, reservations.c.charged).where(reservations.c.id == reservation_id)
            )
        ).first()
        if row is None:
            raise UnknownReservationError(f"no reservation {reservation_id}")
        # A released reservation stays free: release means Claude produced nothing we could charge for.
        balance, _ = await read_existing_balance(connection, row.team_id)
        return Settlement(
            reservation_id, charged=row.charged or 0, balance_after=balance, low_balance=False, already_settled=True
        )

    # The sweeper gave the hold back, so the answer is paid from what is available now: never from
    # credits held for other answers, never below zero. The locked read only chooses the amount
    # (on SQLite, BEGIN IMMEDIATE already serializes); the change itself is still one guarded UPDATE.
    account = (
        await connection.execute(
            sa.select(accounts.c.balance, accounts.c.reserved)
            .where(accounts.c.team_id == expired.team_id)
            .with_for_update()
        )
    ).one()
    charged = min(charge, max(account.balance - account.reserved, 0))
    if charged < charge:
        log.warning(
            "reservation %s expired before it was settled; charging %d of %d credits", reservation_id, charged, charge
        )
    fits = (
        accounts.c.balance - accounts.c.reserved >= charged if charged else sa.true()
    )  # 0 fits a negative balance too
    balance = (
        await connection.execute(
            sa.update(accounts)
            .where(accounts.c.team_id == expired.team_id, fits)
            .values(balance=accounts.c.balance - charged)
            .returning(accounts.c.balance)
        )
    ).scalar_one()  # cannot miss: the row is locked and `charged` fits in what was available
    await connection.execute(sa.update(reservations).where(reservations.c.id == reservation_id).values(charged=charged))
    memo = f"settled after the reservation expired: {charged} of {charge} credits charged"
    return await _record_answer(
        connection,
        reservation_id,
        expired.team_id,
        expired.user_id,
        charged,
        balance,
        now,
        low_balance_threshold,
        memo,
        usage=usage,
    )


async def _record_answer(
    connection: AsyncConnection,
    reservation_id: str,
    team_id: str,
    user_id: str | None,
    charged: int,
    balance: int,
    now: datetime,
    low_balance_threshold: int,
    memo: str | None = None,
    *,
    usage: AnswerUsage | None = None,
) -> Settlement:
    # A usage row even for 0 credits: every settled answer shows in history and in usage counts,
    # and its (answer, reservation id) key is one more guard against charging twice.
    recorded = await record(
        connection,
        team_id=team_id,
        kind="usage",
        amount=-charged,
        balance_after=balance,
        source=ANSWER_SOURCE,
        external_id=reservation_id,
        now=now,
        user_id=user_id,
        memo=memo,
    )
    if not recorded:
        raise RuntimeError(f"reservation {reservation_id} was open although its answer was already charged")
    if usage is not None:  # under the ledger row's unique key: written once, like the charge
        await connection.execute(
            sa.insert(answer_usage).values(
                reservation_id=reservation_id,
                team_id=team_id,
                user_id=user_id,
                channel_id=usage.channel_id,
                model=usage.model,
                input_tokens=usage.input_tokens,
                cache_creation_input_tokens=usage.cache_creation_input_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                output_tokens=usage.output_tokens,
                credits=charged,
                created_at=utc(now),
            )
        )
    low_balance = await flag_low_balance(connection, team_id, low_balance_threshold)
    return Settlement(
        reservation_id, charged=charged, balance_after=balance, low_balance=low_balance, already_settled=False
    )


async def expire(connection: AsyncConnection, reservation_id: str, now: datetime, ttl: timedelta) -> bool:
    """Give back the hold of a reservation past its expiry; False when it was closed meanwhile."""
    expired = (
        await connection.execute(
            sa.update(reservations)
            .where(
                reservations.c.id == reservation_id, reservations.c.status == "held", reservations.c.expires_at <= now
            )
            .values(status="expired", closed_at=now)
            .returning(reservations.c.team_id, reservations.c.user_id, reservations.c.amount, reservations.c.created_at)
        )
    ).first()
    if expired is None:
        return False
    balance = (
        await connection.execute(
            sa.update(accounts)
            .where(accounts.c.team_id == expired.team_id)
            .values(reserved=accounts.c.reserved - expired.amount)
            .returning(accounts.c.balance)
        )
    ).scalar_one()
    # Amount 0: the balance is unchanged, but a hold that nobody settled is worth seeing in history
    # (the bot crashed, or could not reach the database to settle).
    await record(
        connection,
        team_id=expired.team_id,
        kind="release",
        amount=0,
        balance_after=balance,
        source=EXPIRED_SOURCE,
        external_id=reservation_id,
        now=now,
        user_id=expired.user_id,
        memo=f"hold of {expired.amount} credits returned: not settled within {ttl} "
        f"of {utc(expired.created_at):%Y-%m-%d %H:%M:%S} UTC",
    )
    return True
