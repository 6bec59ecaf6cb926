"""What the listeners hand a question to: the app's long-lived collaborators, built once at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import aiohttp
import anthropic
from redis.asyncio import Redis
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import (
    AutoReload,
    Checkout,
    CreditPack,
    Credits,
    Pricing,
    StripeWebhook,
    UnknownModelError,
    build_pricing,
    build_stripe_client,
    find_pack,
    load_prices,
    parse_credit_packs,
)
from bot.answer_settings import AnswerChoice, AnswerSettings
from bot.background import BackgroundTasks
from bot.delivery import DeliveryLimits, SlackSchedulers
from bot.delivery.scheduler import BudgetMaker, LocalBudgets
from bot.delivery.shared_budget import RedisBudgets
from bot.event_dedup import EventLog
from bot.history import ConversationHistory
from bot.inflight import AnswerJournal
from bot.installs import Installs
from bot.metrics import slack_trace
from bot.processes import ProcessRegistry
from bot.stops import AnswerStops
from bot.surfaces.answer_controls import FeedbackStore
from bot.surfaces.purchase_notices import SlackPurchaseNotices
from config import ConfigError, Settings
from storage import ShortTransactions, create_reader, short_transactions

log = logging.getLogger(__name__)

SLACK_TIMEOUT = aiohttp.ClientTimeout(total=30)  # slack_sdk's default, which it applies only to sessions it opens
SLACK_CONNECTIONS = 256


def utc_now() -> datetime:
    return datetime.now(UTC)


def open_slack_http() -> aiohttp.ClientSession:
    """One connection pool for all Slack calls: without it slack_sdk opens a session, and a TCP connection,
    for every call."""
    return aiohttp.ClientSession(
        timeout=SLACK_TIMEOUT, connector=aiohttp.TCPConnector(limit=SLACK_CONNECTIONS), trace_configs=[slack_trace()]
    )


def slack_web_client(settings: Settings, session: aiohttp.ClientSession, token: str | None) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=settings.slack_api_url, session=session)


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    reader: AsyncEngine | None  # SQLite: reads that must not wait for writers (storage.create_reader)
    events: EventLog
    history: ConversationHistory
    credits: Credits
    pricing: Pricing
    claude: anthropic.AsyncAnthropic
    slack: SlackSchedulers  # every Slack write goes through the workspace's scheduler
    redis: RedisBudgets | None  # the budgets' shared side (REDIS_URL), None without Redis
    processes: ProcessRegistry
    journal: AnswerJournal
    stops: AnswerStops
    answer_settings: AnswerSettings  # what admins chose: model, prompt, web search (per workspace and channel)
    claude_slots: asyncio.Semaphore  # CLAUDE_MAX_STREAMS: the Claude streams this process reads at once
    # The questions claimed at once (answer.claim): as many as the pool keeps connections, the others in turn, each
    # taking over the connection of the claim before it (no checkout, no ping). A burst would otherwise take every
    # connection the pool allows, overflow included, and the database and this process would share the CPU among
    # them all while Slack's next requests wait to be acknowledged behind them (README: Many workspaces).
    claims: ShortTransactions
    feedback: FeedbackStore
    tasks: BackgroundTasks
    clock: Callable[[], datetime]
    http: aiohttp.ClientSession
    slack_http: aiohttp.ClientSession  # every Slack Web API client's connections (slack_web_client)
    checkout: Checkout | None
    stripe_webhook: StripeWebhook | None
    reloads: AutoReload | None  # auto-reload (with Stripe only)
    installs: Installs | None = None  # OAuth mode only
    _pricing_by_model: dict[str, Pricing] = field(default_factory=dict)
    _unpriced: set[str] = field(default_factory=set)
    _priced_models: list[str] | None = None

    def pricing_for(self, model: str) -> Pricing:
        """The pricing of answers by `model` (raises billing.UnknownModelError for a model without a price)."""
        if model == self.settings.claude_model:
            return self.pricing
        if model not in self._pricing_by_model:
            self._pricing_by_model[model] = build_pricing(self.settings, model)
        return self._pricing_by_model[model]

    def priced(self, choice: AnswerChoice) -> AnswerChoice:
        """`choice`, or with CLAUDE_MODEL when its model has lost its price (PRICES_FILE changed since)."""
        model = self.priced_model(choice.model)
        return choice if model == choice.model else replace(choice, model=model)

    def priced_model(self, model: str) -> str:
        """`model`, or CLAUDE_MODEL when it has no price (said once: the prices change only with a restart)."""
        if model in self._unpriced:
            return self.settings.claude_model
        try:
            self.pricing_for(model)
        except UnknownModelError:
            self._unpriced.add(model)
            log.warning(
                "model %s has no price (PRICES_FILE); answering and charging as %s", model, self.settings.claude_model
            )
            return self.settings.claude_model
        return model

    def priced_models(self) -> list[str]:
        """The models answers may use: those with a price (read once: PRICES_FILE changes only with a restart)."""
        if self._priced_models is None:
            self._priced_models = sorted(load_prices(self.settings.prices_file))
        return self._priced_models

    async def slack_client_for_team(self, team_id: str) -> AsyncWebClient | None:
        """A Web API client for work that no Slack request started (a purchase granted by Stripe);
        None when the workspace has no installation (any more)."""
        token = self.settings.slack_bot_token
        if self.installs is not None:
            token = await self.installs.bot_token_for_team(team_id)
        return self.slack_web_client(token) if token else None

    def slack_web_client(self, token: str | None) -> AsyncWebClient:
        return slack_web_client(self.settings, self.slack_http, token)

    async def checkout_link(self, team_id: str, user_id: str, credits: int) -> str | None:
        """A Checkout page for the pack of `credits` (after a failed auto-reload); None without Stripe or that pack."""
        if self.checkout is None:
            return None
        pack = find_pack(self.checkout.packs, credits)
        if pack is None:
            return None
        save_card_for = await self.reloads.customer_to_save_card(team_id, even_if_off=True) if self.reloads else None
        link = await self.checkout.create_session(
            team_id, user_id, pack, request_key=f"reload-failed:{uuid.uuid4().hex}", save_card_for=save_card_for
        )
        return link.url

    async def refresh_home(self, team_id: str, user_id: str) -> None:
        """Publish the user's Home tab again (after a purchase was granted)."""
        from bot.surfaces.app_home import publish_home  # the Home tab is built from these services

        client = await self.slack_client_for_team(team_id)
        if client is not None:
            await publish_home(self, client, team_id, user_id)

    async def close(self) -> None:
        """Close everything, each whatever became of the others (the first failure is raised at the end)."""
        async with contextlib.AsyncExitStack() as closing:
            if self.reader is not None:
                closing.push_async_callback(self.reader.dispose)
            closing.push_async_callback(self.engine.dispose)
            closing.push_async_callback(self.slack_http.close)
            closing.push_async_callback(self.http.close)
            closing.push_async_callback(self.claude.close)
            if self.redis is not None:
                closing.push_async_callback(self.redis.redis.aclose)
            closing.push_async_callback(self.slack.close)


def _credit_packs(settings: Settings) -> list[CreditPack]:
    try:
        return parse_credit_packs(settings.credit_packs, settings.stripe_currency)
    except ValueError as error:
        raise ConfigError(f"CREDIT_PACKS is invalid: {error}") from None


def _stripe(
    settings: Settings,
    engine: AsyncEngine,
    credits: Credits,
    packs: list[CreditPack],
    http: aiohttp.ClientSession,
    clock,
    notices,
):
    if not settings.stripe_enabled:
        return None, None, None
    assert settings.public_url and settings.stripe_webhook_secret  # both are part of stripe_enabled
    client = build_stripe_client(settings, http)
    checkout = Checkout(
        engine,
        client,
        packs=packs,
        currency=settings.stripe_currency,
        public_url=settings.public_url,
        clock=clock,
    )
    reloads = AutoReload(engine, client, packs=packs, currency=settings.stripe_currency, notify=notices, clock=clock)
    webhook = StripeWebhook(
        engine,
        credits,
        webhook_secret=settings.stripe_webhook_secret,
        notify=notices,
        clock=clock,
        client=client,
        reloads=reloads,
    )
    return checkout, webhook, reloads


def build_services(settings: Settings, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> Services:
    """Raises billing.UnknownModelError when CLAUDE_MODEL has no price (usage pricing), ConfigError for bad packs.

    Must run inside the event loop (it opens the HTTP session Stripe's client uses)."""
    pricing = build_pricing(settings)  # before anything is opened: these raise on bad settings
    packs = _credit_packs(settings)
    credits = Credits.from_settings(engine, settings, clock=clock)
    process_id = uuid.uuid4().hex
    budgets, redis_budgets = budget_maker(settings, process_id)
    http = aiohttp.ClientSession()
    slack_http = open_slack_http()
    processes = ProcessRegistry(
        engine, process_id=process_id, heartbeat_every=heartbeat_interval(settings), clock=clock
    )
    journal = AnswerJournal(engine, processes, clock=clock)
    reader = create_reader(settings.database_url) if settings.oauth_enabled else None
    services = Services(
        settings=settings,
        engine=engine,
        reader=reader,
        events=EventLog(engine, clock),
        history=ConversationHistory(engine, token_budget=settings.history_token_budget, clock=clock),
        credits=credits,
        pricing=pricing,
        claude=anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key,
            base_url=settings.anthropic_base_url,
            # Retries are ours (ClaudeStream): the SDK's would sleep for any Retry-After, however long.
            max_retries=0,
            timeout=settings.claude_timeout,
            # aiohttp reads hundreds of concurrent streams at about half httpx's CPU per event.
            http_client=anthropic.DefaultAioHttpClient(),
        ),
        slack=SlackSchedulers(delivery_limits(settings), budgets=budgets),
        redis=redis_budgets,
        processes=processes,
        journal=journal,
        stops=AnswerStops(journal),
        claude_slots=asyncio.Semaphore(settings.claude_max_streams),
        claims=short_transactions(engine),
        answer_settings=AnswerSettings(
            engine, default_model=settings.claude_model, default_prompt=settings.system_prompt, clock=clock
        ),
        feedback=FeedbackStore(engine, clock),
        tasks=BackgroundTasks(),
        clock=clock,
        http=http,
        slack_http=slack_http,
        checkout=None,
        stripe_webhook=None,
        reloads=None,
        installs=Installs(settings, engine, slack_web_client(settings, slack_http, None), reader=reader, clock=clock)
        if settings.oauth_enabled
        else None,
    )
    notices = SlackPurchaseNotices(
        services.slack_client_for_team,
        services.slack,
        refresh_home=services.refresh_home,
        checkout_link=services.checkout_link,
    )
    services.checkout, services.stripe_webhook, services.reloads = _stripe(
        settings, engine, credits, packs, http, clock, notices
    )
    return services


EVENT_CLAIM_RETENTION = timedelta(days=2)
MAX_HEARTBEAT_INTERVAL = 12.0


def heartbeat_interval(settings: Settings) -> float:
    """Often enough that an answer left by a dead process is finished within SWEEP_INTERVAL_SECONDS: its owner
    is dead after three heartbeats, a restarted process judges after two of its own, and looks every one."""
    return min(settings.sweep_interval_seconds / 5, MAX_HEARTBEAT_INTERVAL)


def delivery_limits(settings: Settings) -> DeliveryLimits:
    """Each workspace's Slack budgets (shared through Redis, or divided among SLACK_BUDGET_SHARE processes)."""
    return DeliveryLimits(
        edits_per_minute=settings.slack_edits_per_minute,
        update_interval=settings.slack_update_interval,
        channel_posts_per_second=settings.slack_channel_posts_per_second,
        stream_appends_per_minute=settings.slack_stream_appends_per_minute,
        stream_starts_per_minute=settings.slack_stream_starts_per_minute,
        stream_stops_per_minute=settings.slack_stream_stops_per_minute,
    )


REDIS_SOCKET_TIMEOUT = 5.0


def budget_maker(settings: Settings, process_id: str) -> tuple[BudgetMaker, RedisBudgets | None]:
    share = settings.budget_share
    if not settings.redis_url:
        return LocalBudgets(share), None
    # A command given up on is not cancelled (shared_budget.py): the socket timeout is what ends it when Redis hangs.
    redis = Redis.from_url(
        settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_SOCKET_TIMEOUT
    )
    shared = RedisBudgets(redis, share=share, process_id=process_id)
    return shared, shared
