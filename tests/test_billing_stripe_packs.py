from __future__ import annotations

import pytest

from billing.packs import CreditPack, find_pack, parse_credit_packs, to_minor_units

pytestmark = pytest.mark.billing


def test_prices_become_exact_minor_units():
    assert parse_credit_packs("500:5.00,2000:18.00", "USD") == [
        CreditPack(credits=500, unit_amount=500, currency="usd", price_id=None),
        CreditPack(credits=2000, unit_amount=1800, currency="usd", price_id=None),
    ]
    # 0.1 + 0.2 style float errors cannot happen: 19.99 is exactly 1999 cents.
    assert to_minor_units("19.99", "usd") == 1999
    assert to_minor_units("0.29", "eur") == 29


def test_zero_and_three_decimal_currencies():
    assert parse_credit_packs("500:500", "jpy")[0].unit_amount == 500
    assert to_minor_units("1.250", "kwd") == 1250
    assert to_minor_units("5", "isk") == 500
    for price, currency in [("500.5", "jpy"), ("1.255", "kwd"), ("5.50", "isk"), ("5.001", "usd")]:
        with pytest.raises(ValueError):
            to_minor_units(price, currency)


def test_price_ids_and_amounts_can_be_mixed():
    packs = parse_credit_packs(" 500:price_1AbC , 2000:18.00 ", "usd")
    assert packs[0] == CreditPack(credits=500, unit_amount=None, currency="usd", price_id="price_1AbC")
    assert packs[1].unit_amount == 1800
    assert find_pack(packs, 2000) is packs[1]
    assert find_pack(packs, 7) is None


def test_labels_for_slack_and_stripe():
    pack = parse_credit_packs("2000:18.00", "eur")[0]
    assert pack.label == "2,000 credits"
    assert pack.display_price == "18.00 EUR"
    assert parse_credit_packs("500:price_X", "usd")[0].display_price is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "no credit packs"),
        ("500", "CREDITS:PRICE"),
        ("500:", "CREDITS:PRICE"),
        ("abc:5.00", "positive whole number"),
        ("0:5.00", "positive whole number"),
        ("500:0", "greater than zero"),
        ("500:-5", "plain number"),
        ("500:1e3", "plain number"),
        ("500:five", "plain number"),
        ("500:5.001", "more decimals"),
        ("500:price_", "not a Stripe Price id"),
        ("500:5.00,,2000:18.00", "empty entry"),
        ("500:5.00,500:6.00", "more than one pack of 500"),
    ],
)
def test_malformed_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_credit_packs(spec, "usd")


def test_bad_currency():
    with pytest.raises(ValueError, match="three-letter"):
        parse_credit_packs("500:5.00", "dollars")
