"""What the listeners hand a question to: the app's long-lived collaborators, built once at start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anthropic
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import Credits, Pricing, build_pricing
from bot.background import BackgroundTasks
from bot.edit_scheduler import EditSchedulers
from bot.event_dedup import EventLog
from bot.history import ConversationHistory
from config import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    events: EventLog
    history: ConversationHistory
    credits: Credits
    pricing: Pricing
    claude: anthropic.AsyncAnthropic
    edit_schedulers: EditSchedulers
    tasks: BackgroundTasks
    clock: Callable[[], datetime]


def build_services(settings: Settings, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> Services:
    """Raises billing.UnknownModelError when CLAUDE_MODEL has no price (usage pricing)."""
    return Services(
        settings=settings,
        engine=engine,
        events=EventLog(engine, clock),
        history=ConversationHistory(engine, token_budget=settings.history_token_budget, clock=clock),
        credits=Credits.from_settings(engine, settings, clock=clock),
        pricing=build_pricing(settings),
        claude=anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key,
            base_url=settings.anthropic_base_url,
            # Retries are ours (ClaudeStream): the SDK's would sleep for any Retry-After, however long.
            max_retries=0,
            timeout=settings.claude_timeout,
        ),
        edit_schedulers=EditSchedulers(
            edits_per_minute=max(1, settings.slack_edits_per_minute // settings.slack_budget_share),
            interval=settings.slack_update_interval,
        ),
        tasks=BackgroundTasks(),
        clock=clock,
    )


EVENT_CLAIM_RETENTION = timedelta(days=2)
