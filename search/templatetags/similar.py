"""``{% similar_products product %}``: the "similar products" block of a product page.

Lives in ``search`` so that ``catalog`` needs no knowledge of vectors; its template only loads the tag.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from catalog.models import Product
from search import selectors
from search.vectorstores import Filters

register = template.Library()


@register.inclusion_tag("search/_similar.html", takes_context=True)
def similar_products(context: dict[str, Any], product: Product, k: int | None = None) -> dict[str, Any]:
    request = context.get("request")
    same_category = bool(request and request.GET.get("same_category") == "1" and product.category_id)
    k = k or settings.VITRINE_SIMILAR_K
    filters = Filters(category_path=product.category.path) if same_category and product.category else None
    try:
        version = selectors.image_space_version()
        space = version.space
        hits = selectors.similar_products(product=product, k=k, filters=filters, version=version)
    except selectors.NotIndexed:
        return {"product": product, "not_indexed": True, "same_category": same_category}
    products = selectors.products_in_order([h.product_id for h in hits])
    scores = {h.product_id: h.score for h in hits}
    return {"product": product, "results": [(p, scores[p.pk]) for p in products], "space": space,
            "same_category": same_category, "not_indexed": False}  # fmt: skip
