"""Shopper search pages (text, photo) and the staff "compare spaces" page. Thin: ``search.querying`` does the work."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render

from catalog.models import Product
from catalog.services import ImageRejected, query_image_inspect
from catalog.views import colour_links
from config.middleware import upload_limit
from config.ratelimit import rate_limited
from search import embedders
from search.assistants import insight
from search.forms import FilterFields, PhotoSearchForm, SearchForm, sort_products
from search.panels import staff_wants_why, why_toggle_url
from search.querying import photo, similar, text

RESULTS_PER_PAGE = 24
MAX_RESULTS = 96


def _explain(hit: text.SearchHit, outcome: text.SearchOutcome) -> str:
    """Why a text search put a product here, for staff: the fused score and each source's own."""
    sources = ", ".join(f"{name} {score:.3f}" for name, score in hit.sources.items())
    fused = f"fused {hit.score:.3f}: " if outcome.space == "hybrid" else ""
    return f"{fused}{sources}"


@rate_limited("search")
def search(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET or None)
    why = staff_wants_why(request)
    context: dict[str, object] = {"form": form, "why": why, "why_url": why_toggle_url(request)}
    if not request.GET or not form.is_valid() or not form.cleaned_data["q"].strip():
        return render(request, "search/search.html", context, status=400 if form.errors else 200)
    query = form.cleaned_data["q"].strip()
    outcome = text.text_search(query=query, k=MAX_RESULTS, filters=form.filters())
    # Staff's own searches (testing the shop) are not the shoppers' demand.
    track = None if request.user.is_staff else insight.new_token()
    hits = {hit.product_id: hit for hit in outcome.hits}
    products = sort_products(similar.products_in_order(list(hits)), form.cleaned_data.get("sort") or "relevance")
    page = Paginator(products, RESULTS_PER_PAGE).get_page(request.GET.get("page"))
    querystring = request.GET.copy()
    querystring.pop("page", None)
    context.update(query=query, outcome=outcome, page=page, querystring=querystring.urlencode(), space=outcome.space,
                   results=[(p, _explain(hits[p.pk], outcome) if why else None) for p in page.object_list],
                   colour_facet=_colour_facet(request, outcome, form.cleaned_data.get("color") or ""),
                   track=track)  # fmt: skip
    response = render(request, "search/search.html", context)
    if request.GET.get("page") in (None, "", "1"):  # the search, not each further page of it
        return insight.record_after(response, request=request, token=track, kind="text", query=query,
                                    results=len(outcome.hits), top_score=insight.text_top_score(outcome),
                                    no_good_match=outcome.no_good_match)  # fmt: skip
    return response


def _colour_facet(request: HttpRequest, outcome: text.SearchOutcome, active: str) -> list[dict[str, object]]:
    """Colours among the results (own field or pictures), as links that narrow the results to one."""
    counts = text.colour_facet(product_ids=[hit.product_id for hit in outcome.hits])
    if active and active not in dict(counts):
        counts.insert(0, (active, 0))
    return colour_links(request, counts, active)


@upload_limit("VITRINE_PHOTO_MAX_BYTES")
def photo_search(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return render(request, "search/photo.html", {"form": PhotoSearchForm()})
    return _photo_search_post(request)


# What a shopper reads when photo search cannot answer; staff also read why.
PHOTO_NOT_INDEXED = "Search by photo is warming up: the catalogue's pictures are still being analysed. Try again soon."
PHOTO_UNAVAILABLE = "Search by photo is not available right now. Try describing what you are looking for instead."


@rate_limited("photo")
def _photo_search_post(request: HttpRequest) -> HttpResponse:
    form = PhotoSearchForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "search/photo.html", {"form": form}, status=400)
    try:
        # Validated like any upload; read in memory, never written to storage.
        inspected = query_image_inspect(form.cleaned_data["image"])
    except ImageRejected as exc:
        form.add_error("image", exc.reason)
        return render(request, "search/photo.html", {"form": form}, status=400)
    staff = request.user.is_authenticated and request.user.is_staff
    why = bool(staff and request.POST.get("why") == "1")
    # The search form again, filters kept, for another photo or a part of this one.
    again = PhotoSearchForm(initial={name: form.cleaned_data.get(name) for name in FilterFields.base_fields})
    context: dict[str, object] = {"form": again, "preview": photo.photo_preview(image=inspected.rgb), "why": why}
    try:
        hits, space = photo.photo_search(image=inspected.rgb, k=MAX_RESULTS // 4, filters=form.filters())
    except (similar.NotIndexed, embedders.SpaceUnavailable) as exc:
        shown = PHOTO_NOT_INDEXED if isinstance(exc, similar.NotIndexed) else PHOTO_UNAVAILABLE
        context["problem"] = shown + (f" (Staff: {getattr(exc, 'reason', exc)})" if staff else "")
        return render(request, "search/photo.html", context, status=503)
    products = similar.products_in_order([h.product_id for h in hits])
    scores = {h.product_id: h.score for h in hits}
    explain = (lambda p: f"similarity {scores[p.pk]:.3f} in {space}") if why else (lambda p: None)
    track = None if staff else insight.new_token()
    context.update(space=space, searched=True, results=[(p, explain(p)) for p in products], track=track)
    response = render(request, "search/photo.html", context)
    return insight.record_after(response, request=request, token=track, kind="photo", query="", results=len(hits),
                                top_score=hits[0].score if hits else None)  # fmt: skip


TOKEN = re.compile(r"[0-9a-f]{32}")


def result_click(request: HttpRequest, token: str, product_id: int) -> HttpResponse:
    """A search result's link: record the click (after the redirect is sent) and go to the product."""
    product = get_object_or_404(Product.objects.published(), pk=product_id)
    response = HttpResponseRedirect(product.get_absolute_url())
    if TOKEN.fullmatch(token):
        insight.after_response(response, lambda: insight.click_record(token=token, product_id=product.pk))
    return response


@staff_member_required
def compare(request: HttpRequest) -> HttpResponse:
    """One product's nearest neighbours in every image space that has vectors, and hybrid, side by side."""
    query = request.GET.get("product", "").strip()
    product = None
    candidates: list[Product] = []
    if query:
        lookup = Q(sku__iexact=query) | Q(slug=query) | Q(title__icontains=query)
        if re.fullmatch(r"[0-9]{1,18}", query):
            lookup |= Q(pk=int(query))
        candidates = list(Product.objects.filter(lookup).with_primary_image().order_by("title")[:20])
        exact = [p for p in candidates if str(p.pk) == query or p.sku.lower() == query.lower() or p.slug == query]
        product = exact[0] if exact else (candidates[0] if len(candidates) == 1 else None)
    columns: list[dict[str, object]] = []
    if product is not None:
        k = settings.VITRINE_SIMILAR_K
        spaces = embedders.image_spaces() + ([similar.HYBRID] if embedders.text_spaces() else [])
        for space in spaces:
            try:
                ranking = similar.similar_ranking(space)
                if ranking.space != space:
                    raise similar.NotIndexed(f"{space} needs the text space's vectors; none are active yet")
                hits = similar.similar_products(product=product, k=k, ranking=ranking)
            except embedders.SpaceUnavailable as exc:
                columns.append({"space": space, "error": f"Model unavailable: {exc.reason}", "unavailable": True})
                continue
            except similar.NotIndexed as exc:
                columns.append({"space": space, "error": f"Not indexed yet: {exc}."})
                continue
            products = similar.products_in_order([h.product_id for h in hits])
            scores = {h.product_id: h.score for h in hits}
            same = sum(1 for p in products if p.category_id == product.category_id)
            columns.append({"space": space, "results": [(p, scores[p.pk]) for p in products], "same_category": same})
    # An empty page offers a few products to start from.
    suggestions = [] if query else list(Product.objects.published().for_listing().order_by("-created_at")[:6])
    return render(request, "search/compare.html", {"query": query, "product": product, "candidates": candidates,
                                                   "columns": columns, "suggestions": suggestions})  # fmt: skip
