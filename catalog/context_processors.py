from typing import Any

from django.conf import settings
from django.http import HttpRequest

from catalog.models import Category


def shop(request: HttpRequest) -> dict[str, Any]:
    """Top-level categories for the navigation bar (lazy: costs a query only when used)."""
    return {
        "nav_categories": Category.objects.filter(parent__isnull=True).order_by("position", "name"),
        "shop_currency": settings.VITRINE_CURRENCY,
    }
