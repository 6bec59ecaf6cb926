"""`python -m billing`: the operator's tool for credits — grant, balance, history, verify, sweep.

Needs only DATABASE_URL (and the billing settings); no Slack or Anthropic secrets.
Exit codes: 0 done, 1 verify found differences, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from billing.credits import Credits
from billing.results import LedgerEntry
from config import BillingSettings, ConfigError, load_settings
from storage import create_engine, migrate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m billing", description="Manage workspaces' prepaid credits.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grant = commands.add_parser("grant", help="add credits to a workspace (a negative amount takes them away)")
    grant.add_argument("team_id", metavar="TEAM_ID")
    grant.add_argument("amount", metavar="AMOUNT", type=int)
    grant.add_argument("--reason", required=True, help="why; kept in the ledger")

    balance = commands.add_parser("balance", help="show a workspace's balance")
    balance.add_argument("team_id", metavar="TEAM_ID")
    balance.add_argument("--json", action="store_true", help="print team_id, balance, reserved, available as JSON")

    history = commands.add_parser("history", help="show a workspace's recent ledger entries")
    history.add_argument("team_id", metavar="TEAM_ID")
    history.add_argument("--limit", type=int, default=50, help="how many entries (default 50)")

    commands.add_parser("verify", help="check every balance against the ledger and reservations")
    commands.add_parser("sweep", help="release reservations past their expiry")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "grant" and args.amount == 0:
        parser.error("AMOUNT must not be zero")
    if args.command == "history" and args.limit <= 0:
        parser.error("--limit must be a positive number")
    try:
        settings = load_settings(BillingSettings)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: BillingSettings) -> int:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        credits = Credits.from_settings(engine, settings)
        return await COMMANDS[args.command](credits, args)
    finally:
        await engine.dispose()


async def _grant(credits: Credits, args: argparse.Namespace) -> int:
    kind = "grant" if args.amount > 0 else "adjustment"
    await credits.grant(args.team_id, args.amount, kind=kind, source="cli", external_id=str(uuid.uuid4()), memo=args.reason)
    balance = await credits.balance(args.team_id)
    print(f"{args.team_id}: {kind} of {args.amount:+,} credits; balance {balance.balance:,}, available {balance.available:,}")
    return 0


async def _balance(credits: Credits, args: argparse.Namespace) -> int:
    balance = await credits.balance(args.team_id)
    if args.json:
        print(json.dumps({"team_id": balance.team_id, "balance": balance.balance, "reserved": balance.reserved, "available": balance.available}))
    else:
        print(f"{balance.team_id}: balance {balance.balance:,}, reserved {balance.reserved:,}, available {balance.available:,}")
    return 0


async def _history(credits: Credits, args: argparse.Namespace) -> int:
    entries = await credits.history(args.team_id, limit=args.limit)
    if not entries:
        print(f"{args.team_id}: no ledger entries")
        return 0
    print(format_table(entries))
    return 0


async def _verify(credits: Credits, args: argparse.Namespace) -> int:
    differences = await credits.verify()
    if not differences:
        print("OK")
        return 0
    print(f"{len(differences)} difference(s) between balances and the ledger:")
    for difference in differences:
        print(f"  {difference}")
    return 1


async def _sweep(credits: Credits, args: argparse.Namespace) -> int:
    released = await credits.sweep_expired()
    print(f"released {released} expired reservation(s)")
    return 0


COMMANDS = {"grant": _grant, "balance": _balance, "history": _history, "verify": _verify, "sweep": _sweep}


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
        return "  ".join(c.rjust(w) if i in right_aligned else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)])
