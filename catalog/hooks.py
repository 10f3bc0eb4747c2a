"""Places on catalogue pages where other apps add their own parts, registered from their ``AppConfig.ready()``.

The product page asks for its panels here instead of loading another app's template tags, so the catalogue
renders (and is tested) without those apps installed. ``search`` registers "Looks similar".
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.utils.safestring import SafeString, mark_safe

from catalog.models import Product

# A panel renders itself (with its own template) for one product page; "" when it has nothing to show.
ProductPanel = Callable[[HttpRequest, Product], str]

_product_panels: dict[str, ProductPanel] = {}


def product_panel_register(*, name: str, panel: ProductPanel) -> None:
    """Add a panel below the product's details; registering a name again replaces it (app reloads, tests)."""
    _product_panels[name] = panel


def product_panels(*, request: HttpRequest, product: Product) -> list[SafeString]:
    """The rendered panels for a product page, in registration order."""
    rendered = (panel(request, product) for panel in _product_panels.values())
    return [mark_safe(html) for html in rendered if html]
