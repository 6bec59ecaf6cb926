"""Credit packs a workspace can buy, parsed from `CREDIT_PACKS`.

Two spellings, mixable in one list:
    "500:5.00,2000:18.00"       credits : price in major units of STRIPE_CURRENCY (Stripe gets price_data)
    "500:price_1AbC,2000:price_2"  credits : a Stripe Price id (Stripe decides amount and currency)

Prices become integer minor units (cents, or yen for zero-decimal currencies) through Decimal, so
"18.00" is exactly 1800 and a price that cannot be expressed in the currency is an error, not a rounding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

# Stripe's zero-decimal currencies: amounts are whole units ("500" JPY is 500 yen).
# https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
# Three-decimal currencies: Stripe wants three decimals but the last digit must be 0.
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
# Zero-decimal in practice but sent as two decimals that must be 00 (Stripe's backwards compatibility).
WHOLE_UNITS_ONLY_CURRENCIES = frozenset({"isk"})

_PRICE = re.compile(r"^\d+(\.\d+)?$", re.ASCII)
_PRICE_ID = re.compile(r"^price_[A-Za-z0-9_]+$")
_CURRENCY = re.compile(r"^[a-z]{3}$")


@dataclass(frozen=True)
class CreditPack:
    credits: int
    unit_amount: int | None  # minor units; None when Stripe prices it through `price_id`
    currency: str
    price_id: str | None = None

    @property
    def label(self) -> str:
        """What the buyer sees on Stripe's page and in Slack: "500 credits"."""
        return f"{self.credits:,} credits"

    @property
    def display_price(self) -> str | None:
        """ "5.00 USD", or None for Price-id packs whose amount only Stripe knows."""
        if self.unit_amount is None:
            return None
        decimals = minor_unit_decimals(self.currency)
        major = Decimal(self.unit_amount).scaleb(-decimals)
        return f"{major:.{decimals}f} {self.currency.upper()}"


def minor_unit_decimals(currency: str) -> int:
    currency = currency.lower()
    if currency in ZERO_DECIMAL_CURRENCIES:
        return 0
    if currency in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def to_minor_units(price: str, currency: str) -> int:
    """ "5.00" USD -> 500, "500" JPY -> 500; ValueError if the price has more precision than the currency."""
    if not _PRICE.match(price):
        raise ValueError(f"price {price!r} must be a plain number such as 5.00")
    decimals = minor_unit_decimals(currency)
    minor = Decimal(price).scaleb(decimals)
    if minor != minor.to_integral_value():
        raise ValueError(f"price {price} has more decimals than {currency.upper()} allows ({decimals})")
    amount = int(minor)
    if decimals == 3 and amount % 10:
        raise ValueError(
            f"price {price} {currency.upper()} must end in 0 (Stripe rounds three-decimal currencies to 0.01)"
        )
    if currency.lower() in WHOLE_UNITS_ONLY_CURRENCIES and amount % 100:
        raise ValueError(f"price {price} {currency.upper()} must be a whole number")
    if amount <= 0:
        raise ValueError(f"price {price} must be greater than zero")
    return amount


def parse_credit_packs(spec: str, currency: str) -> list[CreditPack]:
    """Parse `CREDIT_PACKS`; raise ValueError naming the offending entry."""
    currency = currency.strip().lower()
    if not _CURRENCY.match(currency):
        raise ValueError(f"currency {currency!r} must be a three-letter ISO code such as usd")
    entries = [entry.strip() for entry in spec.split(",")]
    if not any(entries):
        raise ValueError("no credit packs: expected entries like 500:5.00,2000:18.00")

    packs: list[CreditPack] = []
    for entry in entries:
        if not entry:
            raise ValueError(f"empty entry in {spec!r} (stray comma?)")
        credits_text, sep, price = (part.strip() for part in entry.partition(":"))
        if not sep or not price:
            raise ValueError(f"pack {entry!r} must look like CREDITS:PRICE, e.g. 500:5.00 or 500:price_123")
        if not (credits_text.isascii() and credits_text.isdigit()) or int(credits_text) <= 0:
            raise ValueError(f"pack {entry!r}: credits must be a positive whole number")
        credits = int(credits_text)
        if price.startswith("price_"):
            if not _PRICE_ID.match(price):
                raise ValueError(f"pack {entry!r}: {price!r} is not a Stripe Price id")
            pack = CreditPack(credits=credits, unit_amount=None, currency=currency, price_id=price)
        else:
            try:
                unit_amount = to_minor_units(price, currency)
            except ValueError as exc:
                raise ValueError(f"pack {entry!r}: {exc}") from None
            pack = CreditPack(credits=credits, unit_amount=unit_amount, currency=currency)
        if find_pack(packs, credits) is not None:
            # Buttons and webhooks identify a pack by its credits, so they must be unique.
            raise ValueError(f"pack {entry!r}: more than one pack of {credits} credits")
        packs.append(pack)
    return packs


def find_pack(packs: list[CreditPack], credits: int) -> CreditPack | None:
    return next((pack for pack in packs if pack.credits == credits), None)
