"""Search's parts of catalogue pages, registered in ``catalog.hooks`` by ``SearchConfig.ready()``."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.template.loader import render_to_string

from catalog.models import Product
from search.querying import similar
from search.vectorstores import Filters


def similar_products_panel(request: HttpRequest, product: Product) -> str:
    """ "Looks similar" below a product: its nearest products by look and words, optionally in its own category."""
    same_category = bool(request.GET.get("same_category") == "1" and product.category_id)
    filters = Filters(category_path=product.category.path) if same_category and product.category else None
    context: dict[str, object] = {"product": product, "same_category": same_category, "not_indexed": False}
    try:
        # Hybrid (look and words) when the text space has vectors, else the primary image space.
        ranking = similar.similar_ranking()
        hits = similar.similar_products(product=product, k=settings.VITRINE_SIMILAR_K, filters=filters,
                                        ranking=ranking)  # fmt: skip
    except similar.NotIndexed:
        context["not_indexed"] = True
    else:
        # Shoppers see the products in order, never a score or which model ranked them.
        context["results"] = similar.products_in_order([h.product_id for h in hits])
    return render_to_string("search/_similar.html", context, request=request)
