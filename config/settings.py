from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant answering questions inside Slack. "
    "Answer clearly and concisely, using Markdown where it helps."
)


S = TypeVar("S", bound="StorageSettings")


class ConfigError(Exception):
    """Settings are missing or malformed: one line per problem, each naming its setting."""

    def __init__(self, *problems: str, fallback: object | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)
        # The same settings with every bad one at its default (None if that fails too): what the checks that
        # span several settings run on, so that one start lists every problem at once.
        self.fallback = fallback


class StorageSettings(BaseSettings):
    """What every entry point needs: where the database is."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///bot.db"

    def problems(self) -> list[str]:
        """What is wrong across several settings (each one's own form is checked as it is read)."""
        return []

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        """Accept the URLs platforms hand out (`postgres://`, `sqlite:///`) and pick the async driver."""
        for prefix, driver in (
            ("postgres://", "postgresql+asyncpg://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(prefix):
                url = driver + url[len(prefix) :]
                break
        if not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return _asyncpg_ssl(url) if url.startswith("postgresql") else url


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def _asyncpg_ssl(url: str) -> str:
    """Hosts hand out libpq's `?sslmode=require`; asyncpg calls the same thing `ssl` (and refuses `sslmode`)."""
    parsed = make_url(url)
    query = dict(parsed.query)
    mode = query.pop("sslmode", None)
    if mode is None:
        return url
    if mode not in SSL_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(sorted(SSL_MODES))}")
    query.setdefault("ssl", mode)
    return parsed.set(query=query).render_as_string(hide_password=False)


class BillingSettings(StorageSettings):
    """Credits and pricing: enough for `python -m billing`, which needs no Slack or Anthropic secrets."""

    claude_model: str = "claude-sonnet-4-6"
    claude_max_tokens: int = Field(1024, gt=0)
    ai_credits_per_message: int | None = Field(None, gt=0)
    free_credits: int = Field(0, ge=0)
    credits_per_usd: int = Field(100, gt=0)
    credit_markup_percent: int = Field(0, ge=0)
    prices_file: Path | None = None
    low_balance_threshold: int = Field(100, ge=0)
    reservation_ttl_seconds: int = Field(900, gt=0)
    sweep_interval_seconds: float = Field(60.0, gt=0)

    # Stripe
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str = "https://api.stripe.com"
    stripe_max_network_retries: int = Field(2, ge=0, le=10)
    public_url: str | None = None
    credit_packs: str = "500:5.00,2000:18.00"
    stripe_currency: str = "usd"
    credits_buyers: Literal["everyone", "admins"] = "everyone"

    @field_validator("stripe_currency")
    @classmethod
    def _lower_currency(cls, currency: str) -> str:
        return currency.lower()

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, url: str | None) -> str | None:
        """Stripe returns buyers there and Slack redirects installs there: it must be an absolute http(s) URL."""
        if url is None or url == "":
            return None
        scheme, _, rest = url.partition("://")
        if scheme not in ("https", "http") or not rest or rest.startswith("/") or " " in url:
            raise ValueError("must be an absolute URL such as https://bot.example.com")
        return url

    @property
    def stripe_enabled(self) -> bool:
        return bool(self.stripe_secret_key and self.stripe_webhook_secret and self.public_url)


class Settings(BillingSettings):
    """Everything `python -m bot` needs."""

    # Slack
    slack_bot_token: str | None = None
    slack_signing_secret: str
    slack_app_token: str | None = None
    slack_client_id: str | None = None
    slack_client_secret: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_update_interval: float = Field(1.0, gt=0)
    slack_edits_per_minute: int = Field(50, gt=0)
    # Processes sharing each workspace's Slack budgets without Redis (each keeps 1/N); with Redis, the share each
    # falls back to while Redis does not answer. Unset: 1 without Redis, 2 with it.
    slack_budget_share: int | None = Field(None, ge=1)
    redis_url: str | None = None
    slack_channel_posts_per_second: float = Field(1.0, gt=0)
    slack_streaming: Literal["auto", "native", "edit"] = "auto"
    show_cost: bool = True  # a context line under each finished answer: what it cost, the balance after
    slack_stream_appends_per_minute: int = Field(100, gt=0)
    slack_stream_starts_per_minute: int = Field(20, gt=0)
    slack_stream_stops_per_minute: int = Field(20, gt=0)

    # Claude
    anthropic_api_key: str
    anthropic_base_url: str | None = None
    claude_max_retries: int = Field(2, ge=0, le=5)
    claude_retry_max_wait: float = Field(8.0, ge=0)
    claude_timeout: float = Field(60.0, gt=0)
    # Answers this process reads from Claude at once; more wait their turn (their first sign already shows). Each
    # stream costs CPU for every event: beyond what a CPU can read, every answer (and every ack) would slow down.
    claude_max_streams: int = Field(100, ge=1)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    history_token_budget: int = Field(8000, ge=0)
    history_retention_days: int = Field(30, ge=1)
    web_search_max_uses: int = Field(3, ge=1, le=20)  # searches one answer may make, where admins turned web search on

    # Serving
    port: int = Field(3000, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_token: str | None = None  # GET /metrics wants `Authorization: Bearer <token>` when set

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level.upper()

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url or None

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, url: str) -> str:
        return url if url.endswith("/") else url + "/"

    def problems(self) -> list[str]:
        if not self.slack_bot_token and not (self.slack_client_id and self.slack_client_secret):
            return [
                "SLACK_BOT_TOKEN is required (or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to install in many workspaces)"
            ]
        return []

    @property
    def budget_share(self) -> int:
        if self.slack_budget_share is not None:
            return self.slack_budget_share
        return 2 if self.redis_url else 1

    @property
    def oauth_enabled(self) -> bool:
        return bool(self.slack_client_id and self.slack_client_secret and not self.slack_bot_token)


def _describe(error: ErrorDetails) -> str:
    name = str(error["loc"][0]).upper() if error.get("loc") else ""
    if error["type"] == "missing":
        return f"{name} is required"
    message = error["msg"].removeprefix("Value error, ")
    if not name:
        return message
    return f"{name} is invalid: {message}"


@overload
def load_settings(kind: type[S], **overrides: Any) -> S: ...
@overload
def load_settings(**overrides: Any) -> Settings: ...
def load_settings(kind: type[StorageSettings] = Settings, **overrides: Any) -> StorageSettings:
    """Read the settings once; raise ConfigError naming every bad setting, one line each."""
    problems: list[str] = []
    try:
        settings: StorageSettings | None = kind(**overrides)
    except ValidationError as exc:
        problems = list(dict.fromkeys(_describe(error) for error in exc.errors()))
        settings = _with_defaults(kind, exc.errors(), overrides)
    if settings is not None:
        problems += [problem for problem in settings.problems() if problem not in problems]
    if problems:
        raise ConfigError(*problems, fallback=settings)
    assert settings is not None
    return settings


def _with_defaults(kind: type[S], errors: list, overrides: dict) -> S | None:
    replaced = {}
    for error in errors:
        name = str(error["loc"][0]) if error.get("loc") else None
        field = kind.model_fields.get(name) if name else None
        if field is not None:
            replaced[name] = "unset" if field.is_required() else field.get_default(call_default_factory=True)
    try:
        return kind(**{**overrides, **replaced})
    except ValidationError:
        return None
