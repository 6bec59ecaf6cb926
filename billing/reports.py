"""Reading the ledger: usage for /credits, history for the CLI, and the consistency check."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.ledger import utc
from billing.results import LedgerEntry, UsageBreakdown, UsageSummary
from billing.tables import answer_usage
from billing.tables import credit_accounts as accounts
from billing.tables import credit_ledger as ledger
from billing.tables import credit_reservations as reservations

# verify() names at most this many wrong running balances per workspace; one usually explains the rest.
MAX_ROW_DIFFERENCES_PER_TEAM = 5


async def usage(connection: AsyncConnection, team_id: str, *, since: datetime, top: int) -> UsageSummary:
    spent = sa.func.sum(-ledger.c.amount)
    rows = (
        await connection.execute(
            sa.select(ledger.c.user_id, spent.label("spent"), sa.func.count().label("answers"))
            .where(ledger.c.team_id == team_id, ledger.c.kind == "usage", ledger.c.created_at >= utc(since))
            .group_by(ledger.c.user_id)
        )
    ).all()
    total = sum(row.spent for row in rows)
    ranked = sorted(
        ((row.user_id, int(row.spent)) for row in rows if row.user_id and row.spent > 0),
        key=lambda pair: (-pair[1], pair[0]),
    )[:top]
    # Everyone below the top (and answers without a user) as one (None, credits) entry, so the
    # top users and the rest add up to the total.
    rest = total - sum(credits for _, credits in ranked)
    by_user = ranked + ([(None, int(rest))] if rest > 0 else [])
    return UsageSummary(total=int(total), answers=sum(row.answers for row in rows), by_user=by_user)


async def breakdown(connection: AsyncConnection, team_id: str, *, since: datetime) -> UsageBreakdown:
    """Answers since `since` by person and by channel, from what each answer recorded at its settlement."""
    credits, answers = sa.func.sum(answer_usage.c.credits), sa.func.count()
    where = [answer_usage.c.team_id == team_id, answer_usage.c.created_at >= utc(since)]

    async def grouped(column) -> list[tuple[str | None, int, int]]:
        rows = (
            await connection.execute(
                sa.select(column, credits.label("credits"), answers.label("answers")).where(*where).group_by(column)
            )
        ).all()
        return sorted(((row[0], int(row.credits), int(row.answers)) for row in rows), key=lambda r: (-r[1], r[0] or ""))

    by_user = await grouped(answer_usage.c.user_id)
    return UsageBreakdown(
        since=since,
        total=sum(r[1] for r in by_user),
        answers=sum(r[2] for r in by_user),
        by_user=by_user,
        by_channel=await grouped(answer_usage.c.channel_id),
    )


EXPORT_COLUMNS = (
    "time",
    "user",
    "channel",
    "model",
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
    "credits",
)


async def answers_csv(connection: AsyncConnection, team_id: str, *, since: datetime, until: datetime | None) -> str:
    """Every charged answer of the period (`until` excluded), oldest first, as CSV. The ledger says which
    answers there were and what each cost; answers settled before their tokens were recorded have empty
    token columns."""
    answered = ledger.c.created_at
    where = [ledger.c.team_id == team_id, ledger.c.kind == "usage", answered >= utc(since)]
    if until is not None:
        where.append(answered < utc(until))
    rows = (
        await connection.execute(
            sa.select(
                answered.label("answered_at"),
                ledger.c.user_id,
                ledger.c.amount,
                answer_usage.c.channel_id,
                answer_usage.c.model,
                answer_usage.c.input_tokens,
                answer_usage.c.cache_creation_input_tokens,
                answer_usage.c.cache_read_input_tokens,
                answer_usage.c.output_tokens,
            )
            .select_from(ledger.outerjoin(answer_usage, answer_usage.c.reservation_id == ledger.c.external_id))
            .where(*where)
            .order_by(answered, ledger.c.id)
        )
    ).all()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        tokens = [row.input_tokens, row.cache_creation_input_tokens, row.cache_read_input_tokens, row.output_tokens]
        writer.writerow(
            [
                utc(row.answered_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
                row.user_id or "",
                row.channel_id or "",
                row.model or "",
                *("" if count is None else count for count in tokens),
                -row.amount,
            ]
        )
    return out.getvalue()


async def history(connection: AsyncConnection, team_id: str, *, limit: int) -> list[LedgerEntry]:
    """The team's most recent ledger entries, newest first."""
    rows = (
        await connection.execute(
            sa.select(ledger).where(ledger.c.team_id == team_id).order_by(ledger.c.id.desc()).limit(limit)
        )
    ).all()
    return [
        LedgerEntry(
            id=row.id,
            team_id=row.team_id,
            kind=row.kind,
            amount=row.amount,
            balance_after=row.balance_after,
            user_id=row.user_id,
            source=row.source,
            external_id=row.external_id,
            memo=row.memo,
            created_at=utc(row.created_at),
        )
        for row in rows
    ]


async def verify(connection: AsyncConnection) -> list[str]:
    """Differences between the accounts and what the ledger and reservations say they should be."""
    ledger_sums = dict(
        (
            await connection.execute(
                sa.select(ledger.c.team_id, sa.func.sum(ledger.c.amount)).group_by(ledger.c.team_id)
            )
        ).all()
    )
    held_sums = dict(
        (
            await connection.execute(
                sa.select(reservations.c.team_id, sa.func.sum(reservations.c.amount))
                .where(reservations.c.status == "held")
                .group_by(reservations.c.team_id)
            )
        ).all()
    )
    differences: list[str] = []
    account_rows = await connection.execute(
        sa.select(accounts.c.team_id, accounts.c.balance, accounts.c.reserved).order_by(accounts.c.team_id)
    )
    for team_id, balance, reserved in account_rows.all():
        expected_balance = int(ledger_sums.get(team_id) or 0)
        if balance != expected_balance:
            differences.append(f"{team_id}: balance is {balance} but its ledger entries add up to {expected_balance}")
        expected_reserved = int(held_sums.get(team_id) or 0)
        if reserved != expected_reserved:
            differences.append(
                f"{team_id}: reserved is {reserved} but its held reservations add up to {expected_reserved}"
            )
    differences.extend(await _running_balance_differences(connection))
    return differences


async def _running_balance_differences(connection: AsyncConnection) -> list[str]:
    """Each ledger row's balance_after must be the sum of the team's amounts up to it, in id order."""
    running: dict[str, int] = defaultdict(int)
    wrong: dict[str, int] = defaultdict(int)
    differences: list[str] = []
    rows = await connection.stream(
        sa.select(ledger.c.id, ledger.c.team_id, ledger.c.amount, ledger.c.balance_after).order_by(
            ledger.c.team_id, ledger.c.id
        )
    )
    async for entry_id, team_id, amount, balance_after in rows:
        running[team_id] += amount
        if balance_after != running[team_id]:
            wrong[team_id] += 1
            if wrong[team_id] <= MAX_ROW_DIFFERENCES_PER_TEAM:
                differences.append(
                    f"{team_id}: ledger entry {entry_id} says the balance was {balance_after} after it, "
                    f"but the entries up to it add up to {running[team_id]}"
                )
    for team_id, count in wrong.items():
        if count > MAX_ROW_DIFFERENCES_PER_TEAM:
            differences.append(
                f"{team_id}: and {count - MAX_ROW_DIFFERENCES_PER_TEAM} more ledger entries with a wrong balance"
            )
    return differences
