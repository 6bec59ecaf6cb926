"""Pricing: exact integer credits from per-model USD prices, and the flat per-answer price."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from billing import FlatPricing, TokenUsage, UnknownModelError, UsagePricing, build_pricing, load_prices
from config import BillingSettings, ConfigError

pytestmark = pytest.mark.billing

MILLION = 1_000_000


def settings(**overrides) -> BillingSettings:
    # _env_file=None: a developer's .env must not change what the tests compute.
    return BillingSettings(_env_file=None, database_url="sqlite:///unused.db", **overrides)


def sonnet(markup_percent: int = 0, credits_per_usd: int = 100) -> UsagePricing:
    return UsagePricing(
        load_prices()["claude-sonnet-4-6"], credits_per_usd=credits_per_usd, markup_percent=markup_percent
    )


def test_shipped_prices_cover_the_current_models_as_exact_decimals():
    prices = load_prices()
    for model in (
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "claude-opus-4-6",
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-sonnet-5",
        "claude-sonnet-5-5",
    ):
        assert model in prices
    assert prices["claude-sonnet-4-6"].cache_read == Decimal("0.30")
    assert prices["claude-haiku-4-5"].cache_write == Decimal("1.25")
    assert prices["claude-opus-4-8"].output == Decimal("25")
    assert prices["claude-sonnet-5-5"].input == Decimal("2")


@pytest.mark.parametrize(
    ("usage", "credits"),
    [
        (TokenUsage(input_tokens=MILLION), 300),  # $3
        (TokenUsage(cache_creation_input_tokens=MILLION), 375),  # $3.75
        (TokenUsage(cache_read_input_tokens=MILLION), 30),  # $0.30
        (TokenUsage(output_tokens=MILLION), 1500),  # $15
        (
            TokenUsage(
                input_tokens=MILLION,
                cache_creation_input_tokens=MILLION,
                cache_read_input_tokens=MILLION,
                output_tokens=MILLION,
            ),
            2205,
        ),
        (TokenUsage(), 0),
    ],
)
def test_each_token_kind_is_charged_at_its_own_price(usage, credits):
    assert sonnet().charge(usage, produced_output=True) == credits


def test_markup_is_applied_exactly():
    assert sonnet(markup_percent=20).charge(TokenUsage(input_tokens=MILLION), produced_output=True) == 360
    # 1M cache reads = $0.30 -> 30 credits, +15% = 34.5 -> 35
    assert sonnet(markup_percent=15).charge(TokenUsage(cache_read_input_tokens=MILLION), produced_output=True) == 35


def test_fractions_of_a_credit_round_up():
    pricing = sonnet()
    # 1 input token = $0.000003 = 0.0003 credits -> 1
    assert pricing.charge(TokenUsage(input_tokens=1), produced_output=True) == 1
    # 1,000 in + 500 out = $0.003 + $0.0075 = 1.05 credits -> 2
    assert pricing.charge(TokenUsage(input_tokens=1_000, output_tokens=500), produced_output=True) == 2
    # A whole number of credits is not rounded up further: 100,000 cache reads = $0.03 = exactly 3.
    assert pricing.charge(TokenUsage(cache_read_input_tokens=100_000), produced_output=True) == 3


def test_input_is_charged_even_without_output():
    assert sonnet().charge(TokenUsage(input_tokens=10_000), produced_output=False) == 3


def test_worst_case_prices_input_as_cache_writes_and_the_whole_output_budget():
    # 2,000 input at $3.75/M + 1,024 output at $15/M = $0.0075 + $0.01536 = 2.286 credits -> 3
    assert sonnet().worst_case(2_000, 1_024) == 3
    assert sonnet().worst_case(2_000, 1_024) >= sonnet().charge(
        TokenUsage(cache_creation_input_tokens=2_000, output_tokens=1_024), produced_output=True
    )


def test_describe_quotes_a_range():
    assert sonnet().describe() == "about 1–4 credits per answer (priced by tokens used)"


def test_flat_pricing():
    pricing = FlatPricing(10)
    assert pricing.worst_case(50_000, 4_096) == 10
    assert pricing.charge(TokenUsage(input_tokens=5, output_tokens=5), produced_output=True) == 10
    assert pricing.charge(TokenUsage(input_tokens=5), produced_output=False) == 0
    assert pricing.describe() == "10 credits per answer"
    assert FlatPricing(1).describe() == "1 credit per answer"


def test_build_pricing_prefers_flat_pricing_when_configured():
    assert isinstance(build_pricing(settings(ai_credits_per_message=7)), FlatPricing)
    pricing = build_pricing(settings(claude_model="claude-haiku-4-5", credit_markup_percent=20))
    assert isinstance(pricing, UsagePricing)
    assert pricing.charge(TokenUsage(output_tokens=MILLION), produced_output=True) == 600  # $5 x 120


def test_dated_snapshots_are_priced_like_their_model():
    pricing = build_pricing(settings(claude_model="claude-sonnet-4-6-20260101"))
    assert pricing.charge(TokenUsage(input_tokens=MILLION), produced_output=True) == 300


def test_unknown_model_raises():
    with pytest.raises(UnknownModelError, match="no price for model claude-future-9; add it to PRICES_FILE"):
        build_pricing(settings(claude_model="claude-future-9"))
    # ...but a flat price needs no model price
    assert (
        build_pricing(settings(claude_model="claude-future-9", ai_credits_per_message=5)).describe()
        == "5 credits per answer"
    )


def test_operator_prices_file_overrides_and_extends(tmp_path):
    prices_file = tmp_path / "prices.json"
    prices_file.write_text(
        json.dumps(
            {
                "models": {
                    "claude-sonnet-4-6": {"input": "6"},  # only what changes
                    "claude-future-9": {"input": "1.5", "cache_write": "1.875", "cache_read": "0.15", "output": "7.5"},
                }
            }
        )
    )
    prices = load_prices(prices_file)
    assert prices["claude-sonnet-4-6"].input == Decimal("6")
    assert prices["claude-sonnet-4-6"].output == Decimal("15")  # kept from the shipped file
    assert prices["claude-haiku-4-5"].input == Decimal("1")

    pricing = build_pricing(settings(claude_model="claude-future-9", prices_file=prices_file))
    assert pricing.charge(TokenUsage(output_tokens=MILLION), produced_output=True) == 750
    overridden = build_pricing(settings(prices_file=prices_file))
    assert overridden.charge(TokenUsage(input_tokens=MILLION), produced_output=True) == 600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"models": {"m": {"input": "abc", "cache_write": "1", "cache_read": "1", "output": "1"}}}', "decimal string"),
        ('{"models": {"m": {"input": "1"}}}', "lack cache_write, cache_read, output"),
        ('{"models": {"m": {"inptu": "1"}}}', "unknown keys"),
        ('{"models": {"m": {"input": "-1", "cache_write": "1", "cache_read": "1", "output": "1"}}}', "zero or more"),
        ("not json", "not valid JSON"),
        ('["m"]', "must look like"),
    ],
)
def test_a_broken_prices_file_is_a_config_error(tmp_path, content, message):
    prices_file = tmp_path / "prices.json"
    prices_file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_prices(prices_file)


def test_a_missing_prices_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_prices(tmp_path / "nope.json")
