"""`python -m bench`: run the scenarios and print the table (Markdown, ready for README)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import time

from bench.bursts import burst_table, parse_bursts, run_burst
from bench.databases import fresh_database
from bench.references import REFERENCES
from bench.report import calls_by_channel, markdown_table, summarize
from bench.scenarios import Options, Scenario, World, run_bot, run_references
from config import Settings


def parse_scenarios(spec: str) -> list[Scenario]:
    """ "1,5,20,100,500/100": answers, optionally "/workspaces" they are spread over."""
    scenarios = []
    for part in filter(None, spec.split(",")):
        if part.strip() == "none":
            continue
        answers, _, workspaces = part.strip().partition("/")
        scenarios.append(Scenario(int(answers), int(workspaces or 1)))
    return scenarios


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenarios",
        default="500/100,1,5,20,100",
        help="answers at once, comma-separated; N/W spreads N answers over W workspaces "
        "(default: %(default)s; the many-workspace one first, so its memory is measured "
        "from a fresh process)",
    )
    parser.add_argument("--words", type=int, default=400, help="words per answer (default: %(default)s)")
    parser.add_argument("--words-per-second", type=float, default=40.0)
    parser.add_argument(
        "--references",
        default=",".join(REFERENCES),
        help="reference approaches to run beside the bot, or 'none' (default: all)",
    )
    parser.add_argument(
        "--reference-max-answers",
        type=int,
        default=20,
        help="skip the references in scenarios with more answers than this (default: %(default)s; "
        "at 100 they'd need 5+ minutes of Retry-After)",
    )
    parser.add_argument("--time-limit", type=float, default=240.0, help="seconds before an approach is cut off")
    parser.add_argument("--ramp", type=float, default=1.0, help="mentions arrive spread over this many seconds")
    parser.add_argument(
        "--modes",
        default="auto,native,edit",
        help="the bot's SLACK_STREAMING modes to run in each scenario of one workspace (default: %(default)s; "
        "scenarios over many workspaces run the first only)",
    )
    parser.add_argument(
        "--bursts",
        default="200@10ch/2s:50,30@1ch/3s",
        help="bursts of mentions in a few channels, comma-separated: M@Cch/Ss[:N] is M mentions over C "
        "channels within S seconds, with credits for N answers (default: %(default)s; 'none' skips)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server (postgresql://user@host/db): each run gets a new database there "
        "(default: a SQLite file per run)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="bot processes sharing the load (default: %(default)s); with more than one they share the "
        "Slack budgets through Redis",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="the Redis several processes share (default: a private redis-server, started for the run)",
    )
    parser.add_argument(
        "--claude-max-streams",
        type=int,
        default=None,
        help="CLAUDE_MAX_STREAMS of each bot process (default: the bot's own, 100, divided among --processes, which "
        "share this machine's CPUs)",
    )
    parser.add_argument("--quick", action="store_true", help="1, 5 and 20 answers of 150 words, two references")
    args = parser.parse_args(argv)
    if args.quick:
        args.scenarios, args.words, args.references = "1,5,20", 150, "every_delta,chat_stream"
        args.time_limit = min(args.time_limit, 90.0)
        args.bursts = "none"
    return args


def claude_streams_each(processes: int) -> int | None:
    """Several bot processes here share this machine's CPUs, where each would have its own in production: each gets
    its share of the bot's default CLAUDE_MAX_STREAMS, as each dyno is sized to its CPU."""
    if processes <= 1:
        return None
    return max(1, Settings.model_fields["claude_max_streams"].default // processes)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


async def main(args: argparse.Namespace) -> None:
    references = tuple(r for r in args.references.split(",") if r and r != "none")
    unknown = set(references) - set(REFERENCES)
    if unknown:
        sys.exit(f"unknown reference approach(es): {', '.join(sorted(unknown))}; choose from {', '.join(REFERENCES)}")
    options = Options(
        words=args.words,
        words_per_second=args.words_per_second,
        ramp=args.ramp,
        time_limit=args.time_limit,
        references=references,
        claude_max_streams=args.claude_max_streams or claude_streams_each(args.processes),
    )
    rows, burst_rows = [], []
    started = time.monotonic()
    redis_url, redis_server = args.redis_url, None
    if args.processes > 1 and not redis_url:
        from tests.redis_server import RedisServer, redis_binary

        redis_server = RedisServer(redis_binary())
        redis_server.start()
        redis_url = redis_server.url
    async with World(options) as world:
        for n, scenario in enumerate(parse_scenarios(args.scenarios)):
            tag = f"s{n}"
            runs = []
            for mode in args.modes.split(",")[: 1 if scenario.workspaces > 1 else None]:
                print(f"scenario {scenario.name}: the bot ({mode})…", file=sys.stderr, flush=True)
                async with fresh_database(args.database_url) as database_url:
                    runs.append(
                        await run_bot(
                            world,
                            scenario,
                            tag,
                            mode=mode,
                            database_url=database_url,
                            processes=args.processes,
                            redis_url=redis_url,
                        )
                    )
            if references and scenario.workspaces == 1 and scenario.answers <= args.reference_max_answers:
                print(f"scenario {scenario.name}: {', '.join(references)}…", file=sys.stderr, flush=True)
                runs += await run_references(world, scenario, tag)
            calls = calls_by_channel(world.slack.calls)
            for run in runs:
                rows.append(summarize(run, calls, interval=options.interval, edits_per_minute=options.edits_per_minute))
            world.slack.calls.clear()  # what is summarized is no longer needed
        if rows:
            print(markdown_table(rows), flush=True)
            print(flush=True)
        for n, burst in enumerate(parse_bursts(args.bursts)):
            print(f"burst {burst.name}: the bot…", file=sys.stderr, flush=True)
            async with fresh_database(args.database_url) as database_url:
                burst_rows.append(
                    await run_burst(world, burst, f"b{n}", database_url=database_url, time_limit=args.time_limit)
                )
            world.slack.calls.clear()
    if redis_server is not None:
        redis_server.kill()
    if burst_rows:
        print(burst_table(burst_rows))
        print()
    print(
        f"Machine: {machine()}. Answers of {args.words} words at {args.words_per_second:g} words/s; "
        f"mentions spread over {args.ramp:g} s; the bot in {args.processes} process(es) of its own"
        f"{' sharing Redis' if args.processes > 1 else ''}, the fakes in the benchmark's; "
        f"total {time.monotonic() - started:.0f} s."
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(arguments(sys.argv[1:])))
