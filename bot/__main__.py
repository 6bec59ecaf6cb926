"""`python -m bot` runs the bot; `python -m bot migrate` only brings the database schema up to date;
`python -m bot check` checks the settings, the database and every credential without serving."""

from __future__ import annotations

import argparse
import asyncio
import sys

from config import Settings, StorageSettings

START_FAILED = 2


def _report(problems: list[str]) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    return START_FAILED


async def _migrate(settings: StorageSettings) -> None:
    from bot.startup import reach_database

    engine = await reach_database(settings)
    await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate", "check"], default="serve")
    args = parser.parse_args(argv)
    if args.command == "check":
        from bot.check import check

        return check()
    from bot.logs import configure_logging
    from bot.startup import StartupError, read_settings

    try:
        settings = read_settings(StorageSettings if args.command == "migrate" else Settings)
    except StartupError as error:
        return _report(error.problems)
    configure_logging(getattr(settings, "log_level", "INFO"), getattr(settings, "log_format", "text"))
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
            print("database is up to date")
            return 0
        from bot.server import serve_forever

        assert isinstance(settings, Settings)  # `serve` read the full Settings above
        asyncio.run(serve_forever(settings))
    except StartupError as error:
        return _report(error.problems)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
