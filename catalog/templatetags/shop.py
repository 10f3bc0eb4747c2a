from decimal import Decimal

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma

register = template.Library()

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF "}


@register.filter
def money(amount: Decimal | None, currency: str = "EUR") -> str:
    """12.5, "EUR" -> "€12.50"; no price -> "Price on request"."""
    if amount is None:
        return "Price on request"
    symbol = SYMBOLS.get(currency, f"{currency} ")
    whole, _, cents = f"{amount:.2f}".partition(".")
    return f"{symbol}{intcomma(int(whole))}.{cents}"
