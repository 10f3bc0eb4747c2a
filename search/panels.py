"""Search's parts of catalogue pages, registered in ``catalog.hooks`` by ``SearchConfig.ready()``."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.template.loader import render_to_string

from catalog.models import Product
from search import embedders
from search.querying import similar
from search.vectorstores import Filters


def staff_wants_why(request: HttpRequest) -> bool:
    """Staff who asked (``?why=1``) see why each result is there: its scores and the spaces behind them. Shoppers
    never see scores or model names."""
    return bool(request.user.is_authenticated and request.user.is_staff and request.GET.get("why") == "1")


def why_toggle_url(request: HttpRequest) -> str:
    """This page's address with ``why`` switched: the staff link that shows or hides why results are there."""
    query = request.GET.copy()
    if query.get("why") == "1":
        query.pop("why")
    else:
        query["why"] = "1"
    return f"{request.path}?{query.urlencode()}"


def similar_products_panel(request: HttpRequest, product: Product) -> str:
    """ "Looks similar" below a product: its nearest products by look and words, optionally in its own category."""
    same_category = bool(request.GET.get("same_category") == "1" and product.category_id)
    filters = Filters(category_path=product.category.path) if same_category and product.category else None
    why = staff_wants_why(request)
    context: dict[str, object] = {"product": product, "same_category": same_category, "not_indexed": False,
                                  "why": why, "why_url": why_toggle_url(request)}  # fmt: skip
    try:
        # Hybrid (look and words) when the text space has vectors, else the primary image space.
        ranking = similar.similar_ranking()
        hits = similar.similar_products(product=product, k=settings.VITRINE_SIMILAR_K, filters=filters,
                                        ranking=ranking)  # fmt: skip
    except similar.NotIndexed:
        context["not_indexed"] = True
    except embedders.SpaceUnavailable as exc:
        # Nothing to show, and nothing a shopper could do about it: the section stays out; staff learn why.
        if not request.user.is_staff:
            return ""
        context["unavailable"] = exc.reason
    else:
        # Shoppers see the products in order, never a score or which model ranked them; staff who ask see why.
        products = similar.products_in_order([h.product_id for h in hits])
        scores = {h.product_id: h.score for h in hits}
        explain = (lambda p: f"similarity {scores[p.pk]:.3f} by {ranking.space}") if why else (lambda p: None)
        context.update(results=[(p, explain(p)) for p in products], space=ranking.space)
    return render_to_string("search/_similar.html", context, request=request)
