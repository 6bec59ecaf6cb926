"""What an answer costs in credits: by tokens used (per-model prices) or a flat price per answer.

Money never passes through a float: prices are Decimals read from decimal strings, arithmetic is
exact (Fraction), and only the final amount is rounded — up, to whole credits, so the operator
never undercharges by a rounding error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Protocol, runtime_checkable

from config import BillingSettings, ConfigError

SHIPPED_PRICES = Path(__file__).with_name("prices.json")
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are USD per million tokens

# The range `describe()` quotes: a short exchange, and a long one that uses the whole output budget.
SHORT_ANSWER_INPUT_TOKENS, SHORT_ANSWER_OUTPUT_TOKENS = 1_000, 200
LONG_ANSWER_INPUT_TOKENS = 8_000

# Anthropic's server-side web search: USD 10 per 1,000 searches, on top of the tokens the results add.
WEB_SEARCH_USD_PER_SEARCH = Fraction(10, 1000)

# "claude-sonnet-4-6-20260115" is priced like "claude-sonnet-4-6".
_SNAPSHOT_DATE = re.compile(r"-\d{8}$")


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0
    web_search_requests: int = 0  # server-side web searches, priced per search on top of the tokens


class UnknownModelError(ValueError):
    """CLAUDE_MODEL has no price, so usage pricing cannot charge for it."""


@dataclass(frozen=True)
class ModelPrices:
    """USD per million tokens."""

    input: Decimal
    cache_write: Decimal
    cache_read: Decimal
    output: Decimal


@runtime_checkable
class Pricing(Protocol):
    def worst_case(self, estimated_input_tokens: int, max_output_tokens: int, searches: int = 0) -> int:
        """Credits to reserve before asking Claude: the most the answer can cost."""
        ...

    def charge(self, usage: TokenUsage, *, produced_output: bool) -> int:
        """Credits for what was consumed."""
        ...

    def describe(self) -> str:
        """One line for /credits."""
        ...


class UsagePricing:
    """Charges each token kind at the model's USD price, converted at credits_per_usd plus markup."""

    def __init__(
        self, prices: ModelPrices, *, credits_per_usd: int = 100, markup_percent: int = 0, max_output_tokens: int = 1024
    ):
        if credits_per_usd <= 0 or markup_percent < 0:
            raise ValueError("credits_per_usd must be positive and markup_percent not negative")
        self.prices = prices
        self.max_output_tokens = max_output_tokens
        # Credits per USD after markup, kept exact: 100 credits/USD with 20% markup is exactly 120.
        self._credits_per_usd = Fraction(credits_per_usd) * Fraction(100 + markup_percent, 100)

    def _credits(self, usd_per_million_tokens: Fraction) -> int:
        return math.ceil(usd_per_million_tokens / TOKENS_PER_PRICE_UNIT * self._credits_per_usd)

    def _cost(self, usage: TokenUsage) -> Fraction:
        """USD x 1,000,000 for the usage, exact."""
        pairs = (
            (usage.input_tokens, self.prices.input),
            (usage.cache_creation_input_tokens, self.prices.cache_write),
            (usage.cache_read_input_tokens, self.prices.cache_read),
            (usage.output_tokens, self.prices.output),
        )
        if any(tokens < 0 for tokens, _ in pairs) or usage.web_search_requests < 0:
            raise ValueError(f"token counts cannot be negative: {usage}")
        searches = usage.web_search_requests * WEB_SEARCH_USD_PER_SEARCH * 1_000_000  # prices are per million tokens
        return sum((tokens * Fraction(price) for tokens, price in pairs), Fraction(0)) + searches

    def charge(self, usage: TokenUsage, *, produced_output: bool) -> int:
        # Input is paid to Anthropic whether or not text came back, so it is charged either way.
        return self._credits(self._cost(usage))

    def worst_case(self, estimated_input_tokens: int, max_output_tokens: int, searches: int = 0) -> int:
        # How the prompt will be billed (fresh, cache write or cache read) is only known afterwards,
        # so reserve as if all of it were the dearest kind.
        dearest_input = max(self.prices.input, self.prices.cache_write, self.prices.cache_read)
        cost = (
            estimated_input_tokens * Fraction(dearest_input)
            + max_output_tokens * Fraction(self.prices.output)
            + searches * WEB_SEARCH_USD_PER_SEARCH * 1_000_000
        )
        return self._credits(cost)

    def describe(self) -> str:
        low = self.charge(
            TokenUsage(input_tokens=SHORT_ANSWER_INPUT_TOKENS, output_tokens=SHORT_ANSWER_OUTPUT_TOKENS),
            produced_output=True,
        )
        high = self.charge(
            TokenUsage(input_tokens=LONG_ANSWER_INPUT_TOKENS, output_tokens=self.max_output_tokens),
            produced_output=True,
        )
        amount = f"{low:,}" if low == high else f"{low:,}–{high:,}"
        return f"about {amount} credit{'' if high == 1 else 's'} per answer (priced by tokens used)"


class FlatPricing:
    """AI_CREDITS_PER_MESSAGE: every answer that produced text costs the same."""

    def __init__(self, credits_per_message: int):
        if credits_per_message <= 0:
            raise ValueError("credits_per_message must be positive")
        self.credits_per_message = credits_per_message

    def worst_case(self, estimated_input_tokens: int, max_output_tokens: int, searches: int = 0) -> int:
        return self.credits_per_message

    def charge(self, usage: TokenUsage, *, produced_output: bool) -> int:
        return self.credits_per_message if produced_output else 0

    def describe(self) -> str:
        return f"{self.credits_per_message:,} credit{'' if self.credits_per_message == 1 else 's'} per answer"


def _price(value: object, where: str) -> Decimal:
    # json numbers arrive as int or (parse_float) Decimal, never float; strings are the documented form.
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ConfigError(f'{where} must be a decimal string such as "3.75"')
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise ConfigError(f'{where} must be a decimal string such as "3.75", not {value!r}') from None
    if not price.is_finite() or price < 0:
        raise ConfigError(f"{where} must be a price of zero or more, not {value!r}")
    return price


def _read_models(path: Path) -> dict[str, dict]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise ConfigError(f"prices file {path} cannot be read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"prices file {path} is not valid JSON: {exc}") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict) or not all(isinstance(entry, dict) for entry in models.values()):
        raise ConfigError(f'prices file {path} must look like {{"models": {{"MODEL": {{"input": "3", ...}}}}}}')
    return models


def load_prices(path: Path | None = None) -> dict[str, ModelPrices]:
    """The shipped prices, with the operator's file (if any) replacing or adding entries.

    An operator entry for a known model may give only the prices it changes; a new model needs all four.
    """
    names = [field.name for field in fields(ModelPrices)]
    merged: dict[str, dict] = {}
    for source in [SHIPPED_PRICES] + ([Path(path)] if path else []):
        for model, entry in _read_models(source).items():
            unknown = set(entry) - set(names)
            if unknown:
                raise ConfigError(
                    f"prices file {source}: model {model} has unknown keys {sorted(unknown)}; expected {names}"
                )
            merged[model] = {**merged.get(model, {}), **entry}

    prices: dict[str, ModelPrices] = {}
    for model, entry in merged.items():
        missing = [name for name in names if name not in entry]
        if missing:
            raise ConfigError(f"prices for model {model} lack {', '.join(missing)} (USD per million tokens)")
        prices[model] = ModelPrices(**{name: _price(entry[name], f"price {name} of model {model}") for name in names})
    return prices


def prices_for(model: str, prices: dict[str, ModelPrices]) -> ModelPrices:
    found = prices.get(model) or prices.get(_SNAPSHOT_DATE.sub("", model))
    if found is None:
        raise UnknownModelError(f"no price for model {model}; add it to PRICES_FILE")
    return found


def build_pricing(settings: BillingSettings, model: str | None = None) -> Pricing:
    """Flat pricing when AI_CREDITS_PER_MESSAGE is set, otherwise usage pricing for `model` (CLAUDE_MODEL)."""
    if settings.ai_credits_per_message:
        return FlatPricing(settings.ai_credits_per_message)
    return UsagePricing(
        prices_for(model or settings.claude_model, load_prices(settings.prices_file)),
        credits_per_usd=settings.credits_per_usd,
        markup_percent=settings.credit_markup_percent,
        max_output_tokens=settings.claude_max_tokens,
    )
