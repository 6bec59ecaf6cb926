"""What is wrong with the billing settings beyond each one's own form: prices, the model's price, the packs."""

from __future__ import annotations

from billing.packs import parse_credit_packs
from billing.pricing import UnknownModelError, build_pricing, load_prices
from config import BillingSettings, ConfigError


def billing_problems(settings: BillingSettings) -> list[str]:
    """One line per problem, each naming its setting; empty when pricing and top-ups can be built."""
    problems = []
    try:
        load_prices(settings.prices_file)
    except ConfigError as error:
        problems.append(f"PRICES_FILE is invalid: {error}")
    else:
        try:
            build_pricing(settings)
        except UnknownModelError as error:
            problems.append(f"CLAUDE_MODEL is invalid: {error}")
        except ConfigError as error:
            problems.append(f"PRICES_FILE is invalid: {error}")
    try:
        parse_credit_packs(settings.credit_packs, settings.stripe_currency)
    except ValueError as error:
        problems.append(f"CREDIT_PACKS is invalid: {error}")
    return problems


def stripe_off_reason(settings: BillingSettings) -> str | None:
    """Why top-ups are off (None when they are on): Stripe needs its key, its webhook secret and PUBLIC_URL."""
    needed = {
        "STRIPE_SECRET_KEY": settings.stripe_secret_key,
        "STRIPE_WEBHOOK_SECRET": settings.stripe_webhook_secret,
        "PUBLIC_URL": settings.public_url,
    }
    missing = [name for name, value in needed.items() if not value]
    if not missing:
        return None
    if len(missing) == len(needed):
        return "not configured"
    return f"{' and '.join(missing)} not set"
