"""`python -m bot` runs the bot; `python -m bot migrate` only brings the database schema up to date."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from billing import UnknownModelError
from config import ConfigError, Settings, StorageSettings, load_settings
from storage import create_engine, migrate


async def _migrate(settings: StorageSettings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(StorageSettings if args.command == "migrate" else Settings)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(settings, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        print("database is up to date")
        return 0
    from bot.server import serve_forever

    try:
        asyncio.run(serve_forever(settings))
    except (UnknownModelError, ConfigError) as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
