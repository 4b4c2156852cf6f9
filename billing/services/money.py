"""Money as integers of the currency's minor unit, shown as decimal strings. No floats anywhere."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from babel.numbers import get_currency_precision

from marketplace.core.errors import InvalidInput

#: Currencies a plan may be priced in (ISO 4217); their minor units come from CLDR (Babel).
CURRENCIES = frozenset({"CNY", "HKD", "USD", "EUR", "GBP", "JPY", "SGD"})


def exponent(currency: str) -> int:
    """Digits after the decimal point of ``currency`` (2 for CNY, 0 for JPY)."""
    if currency not in CURRENCIES:
        raise InvalidInput(f"Currency {currency!r} is not supported.", code="currency_not_supported")
    return int(get_currency_precision(currency))


def to_minor(amount: Decimal | str, currency: str) -> int:
    """``amount`` (a decimal string or Decimal) in minor units; more digits than the currency has are refused."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidInput(f"{amount!r} is not an amount of money.", code="invalid_amount") from None
    if not value.is_finite():
        raise InvalidInput(f"{amount!r} is not an amount of money.", code="invalid_amount")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"{amount} has more decimals than {currency} has.", code="invalid_amount")
    return int(scaled)


def to_decimal(minor: int, currency: str) -> str:
    """Minor units as a decimal string with the currency's digits ("1200.00")."""
    digits = exponent(currency)
    return str(Decimal(minor).scaleb(-digits).quantize(Decimal(1).scaleb(-digits)))


def share(minor: int, rate: Decimal | str) -> int:
    """``rate`` of an amount in minor units, to the nearest minor unit (half up): the franchise fee."""
    return int((Decimal(minor) * Decimal(rate)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def minor_fraction(amount: Decimal | str, currency: str) -> Decimal:
    """``amount`` in minor units, fractions kept (a per-call price of 0.005 CNY is 0.5 fen)."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidInput(f"{amount!r} is not an amount of money.", code="invalid_amount") from None
    return value.scaleb(exponent(currency)).normalize()
