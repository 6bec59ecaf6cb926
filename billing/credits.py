"""Prepaid credits per workspace: reserve before asking Claude, settle for what it consumed.

Each operation is one transaction. An answer's life:
    reserve  -> a "held" reservation; `reserved` grows, the balance does not change yet
    settle   -> held -> "settled": the hold is returned and the charge (at most the hold) taken
    release  -> held -> "released": Claude produced nothing, nothing is charged
    sweep    -> held past its TTL -> "expired": the hold is returned (the bot died or could not settle)
A reservation leaves "held" through exactly one conditional UPDATE, which is what makes settle,
release and the sweeper idempotent and safe against each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing import limits, reports, settlement
from billing.ledger import KINDS, apply_once, open_account, read_balance, read_existing_balance, utc
from billing.limits import OverLimit, SpendingLimit
from billing.metrics import CREDITS_GRANTED
from billing.results import (
    AnswerUsage,
    Balance,
    GrantResult,
    Insufficient,
    LedgerEntry,
    Reservation,
    Settlement,
    UsageBreakdown,
    UsageSummary,
)
from billing.settlement import UnknownReservationError
from billing.stripe_tables import checkout_sessions
from billing.tables import credit_accounts as accounts
from billing.tables import credit_ledger as ledger
from billing.tables import credit_reservations as reservations
from billing.tables import insert_once, spending_limits
from config import BillingSettings

FREE_CREDITS_SOURCE = "free-credits"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Credits:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        free_credits: int = 0,
        reservation_ttl: timedelta = timedelta(minutes=15),
        low_balance_threshold: int = 100,
        clock: Callable[[], datetime] = utc_now,
    ):
        self.engine = engine
        self.free_credits = free_credits
        self.reservation_ttl = reservation_ttl
        self.low_balance_threshold = low_balance_threshold
        self.clock = clock
        self._accounts_seen: set[str] = set()  # accounts found opened (and granted) by an earlier transaction

    @classmethod
    def from_settings(
        cls, engine: AsyncEngine, settings: BillingSettings, clock: Callable[[], datetime] = utc_now
    ) -> Credits:
        return cls(
            engine,
            free_credits=settings.free_credits,
            reservation_ttl=timedelta(seconds=settings.reservation_ttl_seconds),
            low_balance_threshold=settings.low_balance_threshold,
            clock=clock,
        )

    def _now(self) -> datetime:
        return utc(self.clock())

    @asynccontextmanager
    async def _transaction(self, connection: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        """The caller's transaction when it passes one (its other writes commit or fail with this one), else a
        new one."""
        if connection is not None:
            yield connection
            return
        async with self.engine.begin() as own:
            yield own

    # --- answers -------------------------------------------------------------------------------

    async def reserve(
        self,
        team_id: str,
        user_id: str | None,
        amount: int,
        reservation_id: str,
        *,
        connection: AsyncConnection | None = None,
        new: bool = False,
        channel_id: str | None = None,
    ) -> Reservation | Insufficient | OverLimit:
        """Hold `amount` credits for one answer, only if that many are available and no spending limit of the
        user, the workspace's default or the channel would be exceeded (billing/limits.py).

        Idempotent on reservation_id: a repeated call returns the first reservation, whatever became of it.
        `new=True` says the caller's transaction has made sure no other call used this id (it claimed the id's
        event): the hold is then taken in two statements, and a reservation with the same id is an error that
        undoes the transaction. The first sight of a workspace opens its account and grants FREE_CREDITS (once
        ever)."""
        if amount < 0:
            raise ValueError(f"cannot reserve a negative amount ({amount})")
        now = self._now()
        async with self._transaction(connection) as connection:
            if not new:
                existing = await _find_reservation(connection, reservation_id)
                if existing is not None:
                    return existing
            await self._open_account_once(connection, team_id, now)
            if new:
                return await self._hold(connection, team_id, user_id, channel_id, amount, reservation_id, now)
            async with connection.begin_nested() as savepoint:
                if await _take_available(connection, team_id, amount):
                    over = await limits.check(connection, team_id, user_id, channel_id, amount, now)
                    if over is not None:
                        await savepoint.rollback()
                        return over
                    inserted = (
                        await connection.execute(
                            insert_once(connection, reservations, "id")
                            .values(
                                id=reservation_id,
                                team_id=team_id,
                                user_id=user_id,
                                channel_id=channel_id,
                                amount=amount,
                                status="held",
                                created_at=now,
                                expires_at=now + self.reservation_ttl,
                            )
                            .returning(reservations.c.id)
                        )
                    ).first()
                    if inserted is not None:
                        return Reservation(id=reservation_id, team_id=team_id, amount=amount)
                    await savepoint.rollback()  # a concurrent call with the same id won: keep its hold only
            # Refused, or beaten by a concurrent call with the same id that may have used the credits.
            existing = await _find_reservation(connection, reservation_id)
            if existing is not None:
                return existing
            balance, reserved = await read_existing_balance(connection, team_id)
            return Insufficient(team_id=team_id, balance=balance, available=balance - reserved, needed=amount)

    async def _open_account_once(self, connection: AsyncConnection, team_id: str, now: datetime) -> None:
        """The account and its free credits; once both were found made before, this process stops looking
        (accounts are never deleted, so what another transaction committed stays)."""
        if team_id in self._accounts_seen:
            return
        created = await open_account(connection, team_id, now)
        granted = await self._grant_free_credits_once(connection, team_id, now)
        if not created and granted is None:
            self._accounts_seen.add(team_id)

    async def _hold(
        self,
        connection: AsyncConnection,
        team_id: str,
        user_id: str | None,
        channel_id: str | None,
        amount: int,
        reservation_id: str,
        now: datetime,
    ) -> Reservation | Insufficient | OverLimit:
        if not await _take_available(connection, team_id, amount):
            balance, reserved = await read_existing_balance(connection, team_id)
            return Insufficient(team_id=team_id, balance=balance, available=balance - reserved, needed=amount)
        # Checked with the account row locked: the workspace's reservations are checked one at a time.
        over = await limits.check(connection, team_id, user_id, channel_id, amount, now)
        if over is not None:
            await _give_back(connection, team_id, amount)
            return over
        await connection.execute(
            sa.insert(reservations).values(
                id=reservation_id,
                team_id=team_id,
                user_id=user_id,
                channel_id=channel_id,
                amount=amount,
                status="held",
                created_at=now,
                expires_at=now + self.reservation_ttl,
            )
        )
        return Reservation(id=reservation_id, team_id=team_id, amount=amount)

    async def extend(self, reservation_id: str, extra: int) -> Reservation | Insufficient | OverLimit:
        """Hold `extra` more credits for an answer whose cost grew once known better (the files of a question,
        read after it was claimed), on the same terms as `reserve`: available credits and spending limits.
        Refused, the hold stays as it was; `needed` and `available` then count this answer's whole hold."""
        if extra < 0:
            raise ValueError(f"cannot extend a hold by a negative amount ({extra})")
        now = self._now()
        async with self.engine.begin() as connection:
            row = (
                await connection.execute(
                    sa.select(
                        reservations.c.team_id, reservations.c.user_id, reservations.c.channel_id, reservations.c.amount
                    ).where(reservations.c.id == reservation_id, reservations.c.status == "held")
                )
            ).first()
            if row is None:
                raise UnknownReservationError(reservation_id)
            if extra == 0:
                return Reservation(id=reservation_id, team_id=row.team_id, amount=row.amount)
            if not await _take_available(connection, row.team_id, extra):
                balance, reserved = await read_existing_balance(connection, row.team_id)
                return Insufficient(
                    team_id=row.team_id,
                    balance=balance,
                    available=balance - reserved + row.amount,
                    needed=row.amount + extra,
                )
            over = await limits.check(connection, row.team_id, row.user_id, row.channel_id, extra, now)
            if over is not None:
                await _give_back(connection, row.team_id, extra)
                return over
            await connection.execute(
                sa.update(reservations)
                .where(reservations.c.id == reservation_id)
                .values(amount=reservations.c.amount + extra)
            )
            return Reservation(id=reservation_id, team_id=row.team_id, amount=row.amount + extra)

    async def grant_free_credits(self, team_id: str) -> GrantResult:
        """The workspace's trial credits now (at install) rather than at its first question; applied=False
        when it had them before (a re-install) or FREE_CREDITS is 0."""
        now = self._now()
        async with self.engine.begin() as connection:
            await open_account(connection, team_id, now)
            balance = await self._grant_free_credits_once(connection, team_id, now)
            if balance is not None:
                return GrantResult(applied=True, balance=balance)
            current, _ = await read_existing_balance(connection, team_id)
            return GrantResult(applied=False, balance=current)

    async def _grant_free_credits_once(self, connection: AsyncConnection, team_id: str, now: datetime) -> int | None:
        """A workspace's trial credits, once ever: keyed by its team id, so a workspace that leaves and
        comes back, or whose account a purchase opened first, gets them exactly once. The new balance
        when this call granted them, else None."""
        if self.free_credits <= 0:
            return None
        already = await connection.execute(
            sa.select(ledger.c.id).where(ledger.c.source == FREE_CREDITS_SOURCE, ledger.c.external_id == team_id)
        )
        if already.first() is not None:
            return None  # the common case, answered without touching the account row
        balance = await apply_once(  # a concurrent first sight is caught by the unique key and undone
            connection,
            team_id=team_id,
            amount=self.free_credits,
            kind="trial",
            source=FREE_CREDITS_SOURCE,
            external_id=team_id,
            now=now,
            low_balance_threshold=self.low_balance_threshold,
            memo="free credits for a new workspace",
        )
        if balance is not None:
            CREDITS_GRANTED.labels("trial").inc(self.free_credits)
        return balance

    async def settle(
        self,
        reservation_id: str,
        charge: int,
        *,
        connection: AsyncConnection | None = None,
        usage: AnswerUsage | None = None,
    ) -> Settlement:
        """Charge for an answer, at most what was reserved; exactly once however often it is called.

        After release() it charges nothing (already_settled=True); after the sweeper expired the
        reservation it charges at most what is available then, still once."""
        if charge < 0:
            raise ValueError(f"cannot charge a negative amount ({charge})")
        async with self._transaction(connection) as connection:
            return await settlement.settle(
                connection, reservation_id, charge, self._now(), self.low_balance_threshold, usage
            )

    async def release(self, reservation_id: str, *, connection: AsyncConnection | None = None) -> None:
        """Claude failed before producing anything: return the hold, charge nothing. Idempotent."""
        now = self._now()
        async with self._transaction(connection) as connection:
            released = (
                await connection.execute(
                    sa.update(reservations)
                    .where(reservations.c.id == reservation_id, reservations.c.status == "held")
                    .values(status="released", charged=0, closed_at=now)
                    .returning(reservations.c.team_id, reservations.c.amount)
                )
            ).first()
            if released is None:
                if await _find_reservation(connection, reservation_id) is None:
                    raise UnknownReservationError(f"no reservation {reservation_id}")
                return  # already settled, released or expired
            # No ledger row: the balance did not change, and the reservation row records the release.
            await connection.execute(
                sa.update(accounts)
                .where(accounts.c.team_id == released.team_id)
                .values(reserved=accounts.c.reserved - released.amount)
            )

    async def renew(self, reservation_ids: Collection[str]) -> int:
        """Push back the expiry of holds whose answers are still being worked on; how many were renewed."""
        if not reservation_ids:
            return 0
        now = self._now()
        async with self.engine.begin() as connection:
            result = await connection.execute(
                sa.update(reservations)
                .where(reservations.c.id.in_(list(reservation_ids)), reservations.c.status == "held")
                .values(expires_at=now + self.reservation_ttl)
            )
        return result.rowcount

    async def sweep_expired(self, *, keep: Collection[str] = ()) -> int:
        """Return the holds of reservations past their expiry, except those in `keep` (someone still answers
        for them); how many. One transaction per reservation, so a sweep never holds many locks, and the
        conditional UPDATE loses gracefully to a late settle."""
        now = self._now()
        async with self.engine.begin() as connection:
            due = (
                (
                    await connection.execute(
                        sa.select(reservations.c.id)
                        .where(reservations.c.status == "held", reservations.c.expires_at <= now)
                        .order_by(reservations.c.expires_at)
                    )
                )
                .scalars()
                .all()
            )
        swept = 0
        for reservation_id in (r for r in due if r not in keep):
            async with self.engine.begin() as connection:
                if await settlement.expire(connection, reservation_id, now, self.reservation_ttl):
                    swept += 1
        return swept

    # --- top-ups and corrections ---------------------------------------------------------------

    async def grant(
        self,
        team_id: str,
        amount: int,
        *,
        kind: str,
        source: str,
        external_id: str,
        user_id: str | None = None,
        memo: str | None = None,
        allow_negative: bool = True,
    ) -> GrantResult:
        """Add (or, negative, take) credits once per (source, external_id). May take the balance below
        zero (a refunded purchase is taken back even if it was already spent) unless `allow_negative` is
        False: then NegativeBalanceError, and nothing changes."""
        if kind not in KINDS:
            raise ValueError(f"unknown ledger kind {kind!r}; expected one of {sorted(KINDS)}")
        now = self._now()
        async with self.engine.begin() as connection:
            await open_account(connection, team_id, now)
            balance = await apply_once(
                connection,
                team_id=team_id,
                amount=amount,
                kind=kind,
                source=source,
                external_id=external_id,
                now=now,
                low_balance_threshold=self.low_balance_threshold,
                user_id=user_id,
                memo=memo,
            )
            if balance is not None and amount < 0 and balance < 0 and not allow_negative:
                raise NegativeBalanceError(team_id, amount, balance)  # the transaction undoes the change
            if balance is not None:
                if amount > 0:
                    CREDITS_GRANTED.labels(kind).inc(amount)  # counted once: a replayed grant is not applied
                return GrantResult(applied=True, balance=balance)
            current, _ = await read_existing_balance(connection, team_id)
            return GrantResult(applied=False, balance=current)

    # --- spending limits ------------------------------------------------------------------------

    async def set_limit(self, team_id: str, limit: SpendingLimit) -> None:
        if limit.scope not in limits.SCOPES or limit.period not in limits.PERIODS or limit.credits < 0:
            raise ValueError(f"not a spending limit: {limit}")
        async with self.engine.begin() as connection:
            await limits.set_limit(connection, team_id, limit, self._now())

    async def remove_limit(self, team_id: str, scope: str, subject: str) -> bool:
        """False when there was no such limit."""
        async with self.engine.begin() as connection:
            return await limits.remove_limit(connection, team_id, scope, subject)

    async def limits(self, team_id: str) -> list[tuple[SpendingLimit, int | None]]:
        """Every limit of the workspace with what its subject used this period (None for the default, which
        counts per user)."""
        now = self._now()
        async with self.engine.connect() as connection:
            found = await limits.all_limits(connection, team_id)
            return [
                (limit, None if limit.scope == "default" else await limits.used(connection, team_id, limit, now))
                for limit in found
            ]

    async def billing_contacts(self, team_id: str) -> list[str]:
        """People who bought credits for the workspace or set its limits: whom a low balance concerns."""
        async with self.engine.connect() as connection:
            buyers = sa.select(checkout_sessions.c.user_id).where(
                checkout_sessions.c.team_id == team_id,
                checkout_sessions.c.granted_at.is_not(None),
                checkout_sessions.c.user_id.is_not(None),
            )
            setters = sa.select(spending_limits.c.set_by).where(
                spending_limits.c.team_id == team_id, spending_limits.c.set_by.is_not(None)
            )
            return sorted(set((await connection.execute(sa.union(buyers, setters))).scalars()))

    # --- reading -------------------------------------------------------------------------------

    async def balance(self, team_id: str) -> Balance:
        async with self.engine.begin() as connection:
            found = await read_balance(connection, team_id)
        balance, reserved = found or (0, 0)
        return Balance(team_id=team_id, balance=balance, reserved=reserved, available=balance - reserved)

    async def usage(self, team_id: str, *, days: int = 30, top: int = 5, since: datetime | None = None) -> UsageSummary:
        """Usage over the last `days`, or since a moment (the App Home shows the calendar month)."""
        since = utc(since) if since is not None else self._now() - timedelta(days=days)
        async with self.engine.begin() as connection:
            return await reports.usage(connection, team_id, since=since, top=top)

    async def month_usage(self, team_id: str) -> UsageBreakdown:
        """This calendar month (UTC) by person and by channel."""
        async with self.engine.connect() as connection:
            return await reports.breakdown(connection, team_id, since=limits.period_start("month", self._now()))

    async def answers_csv(self, team_id: str, *, since: datetime, until: datetime | None = None) -> str:
        """Every answer of the period as CSV (reports.EXPORT_COLUMNS): time (UTC), user, channel, model, tokens,
        credits."""
        async with self.engine.connect() as connection:
            return await reports.answers_csv(connection, team_id, since=since, until=until)

    async def history(self, team_id: str, *, limit: int = 50) -> list[LedgerEntry]:
        async with self.engine.begin() as connection:
            return await reports.history(connection, team_id, limit=limit)

    async def verify(self) -> list[str]:
        async with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # One snapshot for every query, so answers settling meanwhile do not show up as differences.
                await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                return await reports.verify(connection)


class NegativeBalanceError(ValueError):
    """A deduction would take the balance below zero, and the caller did not allow it."""

    def __init__(self, team_id: str, amount: int, balance_after: int):
        super().__init__(f"{team_id}: {amount:+,} credits would leave a balance of {balance_after:,}")
        self.team_id, self.amount, self.balance_after = team_id, amount, balance_after


async def _take_available(connection: AsyncConnection, team_id: str, amount: int) -> bool:
    """Hold `amount` of the workspace's available credits (its account row stays locked to the transaction's end)."""
    held = await connection.execute(
        sa.update(accounts)
        .where(accounts.c.team_id == team_id, accounts.c.balance - accounts.c.reserved >= amount)
        .values(reserved=accounts.c.reserved + amount)
        .returning(accounts.c.team_id)
    )
    return held.first() is not None


async def _give_back(connection: AsyncConnection, team_id: str, amount: int) -> None:
    await connection.execute(
        sa.update(accounts).where(accounts.c.team_id == team_id).values(reserved=accounts.c.reserved - amount)
    )


async def _find_reservation(connection: AsyncConnection, reservation_id: str) -> Reservation | None:
    row = (
        await connection.execute(
            sa.select(reservations.c.id, reservations.c.team_id, reservations.c.amount).where(
                reservations.c.id == reservation_id
            )
        )
    ).first()
    return None if row is None else Reservation(id=row.id, team_id=row.team_id, amount=row.amount)
