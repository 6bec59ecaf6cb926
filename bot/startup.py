"""Starting the bot, in order: the settings, the database, Slack's word on the token; then one summary line.

Each step that fails raises StartupError with one line per problem, which `python -m bot` prints before it
exits with status 2; `python -m bot check` runs the same steps without serving. Whatever a step opened is
closed before the error leaves it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import billing_problems, stripe_off_reason
from config import BillingSettings, ConfigError, Settings, StorageSettings, load_settings
from storage import create_engine, describe_database, migrate

log = logging.getLogger(__name__)
S = TypeVar("S", bound=StorageSettings)

DATABASE_TIMEOUT = 10.0
SLACK_TIMEOUT = 10.0
# auth.test answers that say nothing about the token: Slack itself is unwell. Anything else is a refusal.
SLACK_TROUBLE = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


class StartupError(Exception):
    """The bot cannot start: one line per problem, each saying what to fix."""

    def __init__(self, *problems: str, settings: StorageSettings | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
        self.settings = settings  # bad settings: the same with each bad one at its default, for checks that go on


def read_settings(kind: type[S]) -> S:
    """Every settings problem at once: each setting's own form, then what spans several (prices, packs)."""
    settings: S | None
    try:
        settings, problems = load_settings(kind), []
    except ConfigError as error:
        # load_settings' fallback is `kind` read with its bad settings at their defaults, or None
        settings = error.fallback if isinstance(error.fallback, kind) else None
        problems = list(error.problems)
    if isinstance(settings, BillingSettings):
        problems += [problem for problem in billing_problems(settings) if problem not in problems]
    if problems or settings is None:
        raise StartupError(*(f"configuration error: {problem}" for problem in problems), settings=settings)
    return settings


def sqlite_folder(url: str) -> Path | None:
    """The folder a SQLite file would be created in (None for PostgreSQL and in-memory databases)."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    return Path(database).resolve().parent if database and database != ":memory:" else None


def failure_reason(error: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy adds a wrapper and a link)."""
    if isinstance(error, TimeoutError):
        return "no answer"
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()
    return reason[0] if reason else error.__class__.__name__


async def reach_database(settings: StorageSettings, *, upgrade: bool = True) -> AsyncEngine:
    """An engine on a database that answers, its schema brought up to date (unless `upgrade` is False)."""
    where = describe_database(settings.database_url)
    folder = sqlite_folder(settings.database_url)
    if folder is not None and not folder.is_dir():
        raise StartupError(f"database unreachable: {where}: unable to open database file (no folder {folder})")
    engine = create_engine(settings.database_url)
    try:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT):
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as error:
            await asyncio.sleep(
                0.1
            )  # aiosqlite's worker thread reports its own stop to the loop: let it, before the loop closes
            raise StartupError(f"database unreachable: {where}: {failure_reason(error)}") from None
        if upgrade:
            try:
                await migrate(engine)
            except Exception as error:
                raise StartupError(
                    f"database {where}: could not bring the schema up to date: {failure_reason(error)}"
                ) from None
    except BaseException:
        await engine.dispose()
        raise
    return engine


async def confirm_slack_token(settings: Settings, client: AsyncWebClient) -> AsyncSlackResponse | None:
    """auth.test on SLACK_BOT_TOKEN (single-workspace mode): a refused token stops the start. When Slack cannot
    be asked (down, unreachable), the bot starts anyway and says so: events will tell."""
    if settings.oauth_enabled:
        return None
    try:
        async with asyncio.timeout(SLACK_TIMEOUT):
            return await client.auth_test()
    except SlackApiError as error:
        code = error.response.get("error") if error.response is not None else None
        if code not in SLACK_TROUBLE and (error.response is None or error.response.status_code < 500):
            raise StartupError(
                f"SLACK_BOT_TOKEN refused by Slack ({settings.slack_api_url}auth.test): {code}"
            ) from None
        reason = code or f"HTTP {error.response.status_code}"
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        reason = failure_reason(error) if not isinstance(error, TimeoutError) else "no answer"
    log.warning("could not ask Slack whether SLACK_BOT_TOKEN is valid (%s); starting anyway", reason)
    return None


def summary(settings: Settings, *, port: int, identity: AsyncSlackResponse | None) -> str:
    """The one line an operator reads to know how this process is set up."""
    if settings.oauth_enabled:
        mode = "OAuth (many workspaces)"
    elif identity is not None:
        mode = f"single workspace {identity.get('team_id')} ({identity.get('team')}) as {identity.get('user_id')}"
    else:
        mode = "single workspace (token not confirmed)"
    if settings.ai_credits_per_message:
        pricing = f"{settings.ai_credits_per_message} credits per answer"
    else:
        pricing = f"priced by usage at {settings.credits_per_usd} credits/USD"
        if settings.credit_markup_percent:
            pricing += f" +{settings.credit_markup_percent}%"
    off = stripe_off_reason(settings)
    parts = [
        f"mode {mode}",
        f"database {describe_database(settings.database_url)}",
        f"model {settings.claude_model} ({pricing})",
        f"streaming {settings.slack_streaming}",
        "Stripe on" if off is None else f"Stripe off ({off})",
        "Socket Mode on" if settings.slack_app_token else "Socket Mode off",
        "Redis on" if settings.redis_url else "Redis off",
    ]
    return f"bot ready on port {port}: " + "; ".join(parts)
