"""Prepaid workspace credits: pricing answers, holding and charging credits, and the ledger behind them.

The bot uses exactly what is exported here. `billing` never imports `bot`.
"""

from billing.auto_reload import AutoReload, AutoReloadRule
from billing.configuration import billing_problems, stripe_off_reason
from billing.credits import Credits
from billing.limits import OverLimit, SpendingLimit
from billing.packs import CreditPack, find_pack, parse_credit_packs
from billing.pricing import (
    FlatPricing,
    ModelPrices,
    Pricing,
    TokenUsage,
    UnknownModelError,
    UsagePricing,
    build_pricing,
    load_prices,
)
from billing.results import (
    AnswerUsage,
    Balance,
    GrantResult,
    Insufficient,
    LedgerEntry,
    Reservation,
    Settlement,
    UsageBreakdown,
    UsageSummary,
)
from billing.settlement import UnknownReservationError
from billing.stripe_checkout import Checkout, CheckoutError, CheckoutLink, build_stripe_client
from billing.stripe_web import WEBHOOK_PATH, stripe_routes
from billing.stripe_webhook import PurchaseNotifier, StripeWebhook

__all__ = [
    "WEBHOOK_PATH",
    "AnswerUsage",
    "AutoReload",
    "AutoReloadRule",
    "Balance",
    "Checkout",
    "CheckoutError",
    "CheckoutLink",
    "CreditPack",
    "Credits",
    "FlatPricing",
    "GrantResult",
    "Insufficient",
    "LedgerEntry",
    "ModelPrices",
    "OverLimit",
    "Pricing",
    "PurchaseNotifier",
    "Reservation",
    "Settlement",
    "SpendingLimit",
    "StripeWebhook",
    "TokenUsage",
    "UnknownModelError",
    "UnknownReservationError",
    "UsageBreakdown",
    "UsagePricing",
    "UsageSummary",
    "billing_problems",
    "build_pricing",
    "build_stripe_client",
    "find_pack",
    "load_prices",
    "parse_credit_packs",
    "stripe_off_reason",
    "stripe_routes",
]
