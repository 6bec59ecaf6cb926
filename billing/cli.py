"""`python -m billing`: the operator's tool for credits — grant, balance, history, export, verify, sweep.

Needs only DATABASE_URL (and the billing settings); no Slack or Anthropic secrets. Every command takes
--json. Exit codes: 0 done, 1 verify found differences or a grant was refused, 2 bad configuration or
arguments, or no database for a command that only reads.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sys
import uuid
from datetime import UTC, date, datetime, time

from sqlalchemy.engine import make_url

from billing.credits import Credits, NegativeBalanceError
from billing.results import LedgerEntry
from config import BillingSettings, ConfigError, load_settings
from storage import create_engine, database_missing, migrate

READ_ONLY = {"balance", "history", "verify", "export"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m billing", description="Manage workspaces' prepaid credits.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the result as JSON")

    grant = commands.add_parser(
        "grant", parents=[output], help="add credits to a workspace (a negative amount takes them away)"
    )
    grant.add_argument("team_id", metavar="TEAM_ID")
    grant.add_argument("amount", metavar="AMOUNT", type=int)
    grant.add_argument("--reason", required=True, help="why; kept in the ledger")
    grant.add_argument("--key", help="makes the grant idempotent: a second grant with the same key grants nothing")
    grant.add_argument("--allow-negative", action="store_true", help="let a negative grant take the balance below zero")

    balance = commands.add_parser("balance", parents=[output], help="show a workspace's balance")
    balance.add_argument("team_id", metavar="TEAM_ID")

    history = commands.add_parser("history", parents=[output], help="show a workspace's recent ledger entries")
    history.add_argument("team_id", metavar="TEAM_ID")
    history.add_argument("--limit", type=int, default=50, help="how many entries (default 50)")

    export = commands.add_parser("export", parents=[output], help="every answer of a period as CSV (times in UTC)")
    export.add_argument("team_id", metavar="TEAM_ID")
    export.add_argument("--since", required=True, type=date.fromisoformat, metavar="YYYY-MM-DD", help="first day")
    export.add_argument(
        "--until", type=date.fromisoformat, metavar="YYYY-MM-DD", help="the day after the last (default: now)"
    )

    commands.add_parser("verify", parents=[output], help="check every balance against the ledger and reservations")
    commands.add_parser("sweep", parents=[output], help="release reservations past their expiry")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "grant" and args.amount == 0:
        parser.error("AMOUNT must not be zero")
    if args.command == "history" and args.limit <= 0:
        parser.error("--limit must be a positive number")
    if args.command == "export" and args.until is not None and args.until <= args.since:
        parser.error("--until must be after --since")
    try:
        settings = load_settings(BillingSettings)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: BillingSettings) -> int:
    if args.command in READ_ONLY:
        missing = await database_missing(settings.database_url)
        if missing:
            # Reading must not create what it reads: a mistyped DATABASE_URL would look like an empty ledger.
            print(
                f"no database: {missing} ({make_url(settings.database_url).render_as_string(hide_password=True)})",
                file=sys.stderr,
            )
            return 2
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        credits = Credits.from_settings(engine, settings)
        return await COMMANDS[args.command](credits, args)
    finally:
        await engine.dispose()


def _emit(args: argparse.Namespace, data: dict | list, text: str) -> None:
    print(json.dumps(data) if args.json else text)


async def _grant(credits: Credits, args: argparse.Namespace) -> int:
    kind = "grant" if args.amount > 0 else "adjustment"
    external_id = args.key if args.key is not None else str(uuid.uuid4())
    try:
        result = await credits.grant(
            args.team_id,
            args.amount,
            kind=kind,
            source="cli",
            external_id=external_id,
            memo=args.reason,
            allow_negative=args.allow_negative,
        )
    except NegativeBalanceError as error:
        message = f"{error}; nothing changed (pass --allow-negative to take it below zero)"
        _emit(
            args,
            {
                "team_id": args.team_id,
                "applied": False,
                "error": "negative_balance",
                "balance_after": error.balance_after,
                "message": message,
            },
            message,
        )
        return 1
    balance = await credits.balance(args.team_id)
    if result.applied:
        text = (
            f"{args.team_id}: {kind} of {args.amount:+,} credits; "
            f"balance {balance.balance:,}, available {balance.available:,}"
        )
    else:
        text = (
            f"{args.team_id}: key {args.key!r} was granted before; nothing granted this time; "
            f"balance {balance.balance:,}, available {balance.available:,}"
        )
    _emit(
        args,
        {
            "team_id": args.team_id,
            "applied": result.applied,
            "kind": kind,
            "amount": args.amount,
            "key": args.key,
            "balance": balance.balance,
            "reserved": balance.reserved,
            "available": balance.available,
        },
        text,
    )
    return 0


async def _balance(credits: Credits, args: argparse.Namespace) -> int:
    balance = await credits.balance(args.team_id)
    _emit(
        args,
        {
            "team_id": balance.team_id,
            "balance": balance.balance,
            "reserved": balance.reserved,
            "available": balance.available,
        },
        f"{balance.team_id}: balance {balance.balance:,}, reserved {balance.reserved:,}, "
        f"available {balance.available:,}",
    )
    return 0


async def _history(credits: Credits, args: argparse.Namespace) -> int:
    entries = await credits.history(args.team_id, limit=args.limit)
    data = [
        {
            "id": e.id,
            "created_at": e.created_at.isoformat(),
            "kind": e.kind,
            "amount": e.amount,
            "balance_after": e.balance_after,
            "user_id": e.user_id,
            "source": e.source,
            "external_id": e.external_id,
            "memo": e.memo,
        }
        for e in entries
    ]
    _emit(args, data, format_table(entries) if entries else f"{args.team_id}: no ledger entries")
    return 0


async def _export(credits: Credits, args: argparse.Namespace) -> int:
    since = datetime.combine(args.since, time(), UTC)
    until = datetime.combine(args.until, time(), UTC) if args.until else None
    exported = await credits.answers_csv(args.team_id, since=since, until=until)
    if args.json:
        print(json.dumps(list(csv.DictReader(io.StringIO(exported)))))
    else:
        sys.stdout.write(exported)
    return 0


async def _verify(credits: Credits, args: argparse.Namespace) -> int:
    differences = await credits.verify()
    text = (
        "OK"
        if not differences
        else "\n".join(
            [f"{len(differences)} difference(s) between balances and the ledger:", *(f"  {d}" for d in differences)]
        )
    )
    _emit(args, {"ok": not differences, "differences": differences}, text)
    return 1 if differences else 0


async def _sweep(credits: Credits, args: argparse.Namespace) -> int:
    released = await credits.sweep_expired()
    _emit(args, {"released": released}, f"released {released} expired reservation(s)")
    return 0


COMMANDS = {
    "grant": _grant,
    "balance": _balance,
    "history": _history,
    "export": _export,
    "verify": _verify,
    "sweep": _sweep,
}


def format_table(entries: list[LedgerEntry]) -> str:
    """Newest first, amounts right-aligned, times in UTC."""
    header = ("id", "when (UTC)", "kind", "amount", "balance", "user", "source", "reference", "memo")
    rows = [
        (
            str(entry.id),
            f"{entry.created_at:%Y-%m-%d %H:%M:%S}",
            entry.kind,
            f"{entry.amount:+,}",
            f"{entry.balance_after:,}",
            entry.user_id or "",
            entry.source,
            entry.external_id,
            entry.memo or "",
        )
        for entry in entries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right_aligned = {0, 3, 4}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right_aligned else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)])
