"""Prepaid workspace credits: pricing answers, holding and charging credits, and the ledger behind them.

The bot uses exactly what is exported here. `billing` never imports `bot`.
"""

from billing.credits import Credits
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
from billing.results import Balance, GrantResult, Insufficient, LedgerEntry, Reservation, Settlement, UsageSummary
from billing.settlement import UnknownReservationError

__all__ = [
    "Balance",
    "Credits",
    "FlatPricing",
    "GrantResult",
    "Insufficient",
    "LedgerEntry",
    "ModelPrices",
    "Pricing",
    "Reservation",
    "Settlement",
    "TokenUsage",
    "UnknownModelError",
    "UnknownReservationError",
    "UsagePricing",
    "UsageSummary",
    "build_pricing",
    "load_prices",
]
