"""JSON API: similar products, text search, photo search, and its OpenAPI schema.

Every search answers ``{"results": [{"product_id", "title", "url", "score", "image_url"}...], "space": KEY}``,
best first, one entry per product. Errors answer ``{"error": MESSAGE}`` with a 4xx status, 409 when what the
request needs is not indexed yet (it will be: try again later) and 503 when the model it needs cannot be loaded
(it will not be until someone fixes it: the message says why).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from catalog.models import Category, price_limits
from catalog.selectors import product_published
from catalog.services import ImageRejected, query_image_inspect
from config.middleware import upload_limit
from config.ratelimit import rate_limited
from search import embedders
from search.assistants import insight
from search.colours import COLOURS
from search.forms import MAX_QUERY_LENGTH
from search.querying import photo, similar, text
from search.vectorstores import Filters, StoreUnavailable

MAX_K = 100


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class Searched:
    """A search's answer and what search insight keeps of it (recorded after the response, as for the pages)."""

    body: dict[str, Any]
    kind: str
    query: str
    top_score: float | None
    no_good_match: bool = False


def _recorded(request: HttpRequest, searched: Searched) -> JsonResponse:
    """Each result gets a ``click_url`` that counts the click (staff's own searches and recording off: none)."""
    staff = request.user.is_authenticated and request.user.is_staff
    token = None if staff else insight.new_token()
    results = searched.body["results"]
    if token is not None:
        for result in results:
            result["click_url"] = insight.click_url(request, token=token, product_id=result["product_id"])
    return insight.record_after(JsonResponse(searched.body), request=request, token=token, kind=searched.kind,
                                query=searched.query, results=len(results), top_score=searched.top_score,
                                no_good_match=searched.no_good_match)  # type: ignore[return-value]  # fmt: skip


def api_view(view: Callable[..., dict[str, Any] | Searched]) -> Callable[..., JsonResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            answer = view(request, *args, **kwargs)
            return _recorded(request, answer) if isinstance(answer, Searched) else JsonResponse(answer)
        except ApiError as exc:
            return JsonResponse({"error": exc.message}, status=exc.status)
        except StoreUnavailable:
            return JsonResponse({"error": "search is unavailable for a moment; try again shortly"}, status=503)
        except embedders.SpaceUnavailable as exc:
            return JsonResponse({"error": f"the model for this search is unavailable: {exc.reason}"}, status=503)
        except similar.NotIndexed as exc:
            return JsonResponse({"error": f"not indexed yet: {exc}; try again shortly"}, status=409)

    return wrapper


def _k(request: HttpRequest) -> int:
    raw = request.GET.get("k", "10")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_K:
        raise ApiError(f"k must be a whole number from 1 to {MAX_K}, not {raw[:20]!r}")
    return int(raw)


def _space(request: HttpRequest, modality: str, rankings: Sequence[str] = ()) -> str | None:
    if "space" not in request.GET:
        return None
    space = request.GET["space"]
    usable = [key for key in embedders.enabled() if modality in embedders.modalities(key)] + list(rankings)
    if space not in usable:
        raise ApiError(f"space must be one of {', '.join(usable)} for this search, not {space[:40]!r}")
    return space


def _price(request: HttpRequest, name: str) -> Decimal | None:
    if name not in request.GET:
        return None
    raw = request.GET[name]
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ApiError(f"{name} must be a number, not {raw[:20]!r}") from None
    if not value.is_finite() or value < 0:
        raise ApiError(f"{name} must be a non-negative number")
    top, step = price_limits()
    if value > top:
        raise ApiError(f"{name} must be at most {top}")
    # Prices are whole cents: a bound between two cents means the nearer cent inward (and 1e-100000 is 0.01,
    # not a number PostgreSQL refuses to compare).
    return value.quantize(step, rounding=ROUND_CEILING if name == "price_min" else ROUND_FLOOR)


def _bool(request: HttpRequest, name: str) -> bool:
    if name not in request.GET:
        return False
    raw = request.GET[name].lower()
    if raw in {"0", "false", "no"}:
        return False
    if raw in {"1", "true", "yes"}:
        return True
    raise ApiError(f"{name} must be true or false, not {raw[:20]!r}")


def _filters(request: HttpRequest) -> Filters:
    path = None
    if slug := request.GET.get("category"):
        category = Category.objects.filter(slug=slug).first()
        if category is None:
            raise ApiError(f"unknown category {slug[:60]!r}", status=404)
        path = category.path
    low, high = _price(request, "price_min"), _price(request, "price_max")
    in_stock = _bool(request, "in_stock")
    colour = request.GET.get("color") or None
    if colour is not None and colour not in COLOURS:
        raise ApiError(f"color must be one of {', '.join(COLOURS)}, not {colour[:20]!r}")
    return Filters(category_path=path, price_min=low, price_max=high, in_stock=in_stock, colour=colour)


def _empty_range(filters: Filters) -> bool:
    """price_min above price_max: a valid question whose answer is "nothing"."""
    return filters.price_min is not None and filters.price_max is not None and filters.price_min > filters.price_max


def _results(request: HttpRequest, scored: list[tuple[int, float]]) -> list[dict[str, Any]]:
    scores = dict(scored)
    return [{
        "product_id": card.product_id,
        "title": card.title,
        "url": request.build_absolute_uri(reverse("catalog:product_detail", kwargs={"slug": card.slug})),
        "score": round(float(scores[card.product_id]), 6),
        "image_url": request.build_absolute_uri(url) if (url := card.picture_url()) else None,
    } for card in similar.cards_in_order([pk for pk, _ in scored])]  # fmt: skip


@csrf_exempt  # read-only: any other method gets 405, not a CSRF 403
@require_GET
@api_view
def product_similar(request: HttpRequest, pk: str) -> dict[str, Any]:
    if not re.fullmatch(r"[0-9]{1,18}", pk):
        raise ApiError(f"no published product with id {pk[:40]!r}", status=404)
    found = product_published(pk=int(pk))
    if found is None:
        raise ApiError(f"no published product with id {pk}", status=404)
    product = found.product
    hybrid = [similar.HYBRID] if embedders.text_spaces() else []
    k, space = _k(request), _space(request, embedders.IMAGE, rankings=hybrid)
    filters = _filters(request)
    if _bool(request, "same_category") and found.category_path:
        filters = replace(filters, category_path=found.category_path)
    # Model unavailable (503) and not indexed yet (409) are told apart by api_view.
    ranking = similar.similar_ranking(space)
    if _empty_range(filters):
        return {"results": [], "space": ranking.space}
    hits = similar.similar_products(product=product, k=k, filters=filters, ranking=ranking)
    return {"results": _results(request, [(h.product_id, h.score) for h in hits]), "space": ranking.space}


@csrf_exempt  # read-only: any other method gets 405, not a CSRF 403
@require_GET
@rate_limited("search")
@api_view
def search(request: HttpRequest) -> dict[str, Any] | Searched:
    query = request.GET.get("q", "").strip()
    if not query:
        raise ApiError("q (the search text) is required")
    if len(query) > MAX_QUERY_LENGTH:
        raise ApiError(f"q is longer than {MAX_QUERY_LENGTH} characters")
    k, space, filters = _k(request), _space(request, embedders.TEXT), _filters(request)
    if _empty_range(filters):
        return {"results": [], "space": space or "hybrid", "sources": [], "no_close_match": False}
    outcome = text.text_search(query=query, k=k, filters=filters, space=space)
    body: dict[str, Any] = {"results": _results(request, [(h.product_id, h.score) for h in outcome.hits]),
                            "space": outcome.space, "sources": outcome.sources,
                            "no_close_match": outcome.no_good_match}  # fmt: skip
    if outcome.notices:
        body["notices"] = outcome.notices
    return Searched(body, kind="text", query=query, top_score=insight.text_top_score(outcome),
                    no_good_match=outcome.no_good_match)  # fmt: skip


@upload_limit("VITRINE_PHOTO_MAX_BYTES")
@csrf_exempt  # a read-only query: nothing is stored, no session is used
@require_POST
@rate_limited("photo")
@api_view
def search_image(request: HttpRequest) -> dict[str, Any] | Searched:
    upload = request.FILES.get("image")
    if upload is None:
        raise ApiError("send the photo as multipart form field 'image'")
    k, space, filters = _k(request), _space(request, embedders.IMAGE), _filters(request)
    try:
        inspected = query_image_inspect(upload)
    except ImageRejected as exc:
        raise ApiError(f"image rejected: {exc.reason}") from None
    if _empty_range(filters):
        return {"results": [], "space": space or similar.primary_image_space()}
    hits, used = photo.photo_search(image=inspected.rgb, k=k, filters=filters, space=space)
    body = {"results": _results(request, [(h.product_id, h.score) for h in hits]), "space": used}
    return Searched(body, kind="photo", query="", top_score=hits[0].score if hits else None)


@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    return JsonResponse({"error": f"no such API endpoint: /api/{path[:100]}"}, status=404)


def _param(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


@csrf_exempt
@require_GET
def schema(request: HttpRequest) -> JsonResponse:
    """OpenAPI 3.1 description of this API."""
    image_spaces = [key for key in settings.VITRINE_SPACES if embedders.IMAGE in embedders.modalities(key)]
    text_spaces = [key for key in settings.VITRINE_SPACES if embedders.TEXT in embedders.modalities(key)]
    k = _param("k", f"How many products (1–{MAX_K}).", {"type": "integer", "minimum": 1, "maximum": MAX_K,
                                                         "default": 10})  # fmt: skip
    filters = [
        _param(
            "category",
            "Category slug; includes its subcategories. Unknown slugs answer 404.",
            {"type": "string", "pattern": "^[-a-zA-Z0-9_]*$"},
        ),
        _param("price_min", "Lowest price.", {"type": "number", "minimum": 0, "maximum": float(price_limits()[0])}),
        _param("price_max", "Highest price.", {"type": "number", "minimum": 0, "maximum": float(price_limits()[0])}),
        _param("in_stock", "Only products in stock.", {"type": "boolean"}),
        _param(
            "color",
            "Only products of this colour: their own colour field, or the dominant colour of one of their pictures.",
            {"type": "string", "enum": list(COLOURS)},
        ),
    ]
    hit = {"type": "object", "required": ["product_id", "title", "url", "score", "image_url"], "properties": {
        "product_id": {"type": "integer"}, "title": {"type": "string"}, "url": {"type": "string", "format": "uri"},
        "score": {"type": "number", "description": "Cosine similarity; for hybrid similar products, the weighted "
                  "sum of the image and text cosines; for hybrid text search, the RRF score."},
        "image_url": {"type": ["string", "null"], "format": "uri"},
        "click_url": {"type": "string", "format": "uri", "description": "Text and photo search, while the shop "
                      "records search insight: link the result through this (it redirects to the product) so "
                      "the shop's staff see which searches lead to a click. No cookie; nothing about the visitor "
                      "beyond a daily-rotated hash."}}}  # fmt: skip
    results = {"type": "object", "required": ["results", "space"], "properties": {
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
        "space": {"type": "string"}, "sources": {"type": "array", "items": {"type": "string"}},
        "notices": {"type": "array", "items": {"type": "string"}, "description": "Text search without `space`: "
                    "each source left out and why, \"<space>: model unavailable (<reason>)\" or "
                    "\"<space>: not indexed yet (…)\"."},
        "no_close_match": {"type": "boolean", "description": (
            "Text search only: true when nothing in the shop is close enough to the words to be shown (results "
            "is then empty); a photo may find it. Colour words in q (English, German, French, Spanish) put "
            "products of that colour first.")}}}  # fmt: skip
    error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    meanings = {
        400: "Bad request: a parameter or the image is invalid; the message says which and why.",
        404: "No such product, or no such category.",
        409: "Not indexed yet: the space (or this product) has no vectors yet. The workers are on it; try again "
             "later. Not the same as 503.",
        429: "Too many searches from this client; wait a minute.",
        503: "Model unavailable: the model this search needs cannot be loaded (the message gives the reason, e.g. "
             "its weights are not on this machine). Retrying will not help until it is fixed; ask without `space` "
             "to let the shop use another.",
    }  # fmt: skip

    def answers(*extra: int) -> dict[str, Any]:
        out: dict[str, Any] = {"200": {"description": "Products, best first, one per product.", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Results"}}}}}  # fmt: skip
        for status in (400, 429, *extra):
            out[str(status)] = {"description": meanings[status], "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}  # fmt: skip
        return out

    document = {
        "openapi": "3.1.0",
        "info": {"title": "Vitrine visual search API", "version": "1.0.0"},
        "paths": {
            "/api/products/{id}/similar": {"get": {
                "summary": "Products that look like this one (itself excluded).",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}, k,
                               _param("space", "An image space, or hybrid: look and words together (an image "
                                      "space and the text space, with weights tuned for this catalogue by `evaluate "
                                      "--tune hybrid`). Default: hybrid when the text space has vectors, else the "
                                      "primary image space. The answer's space says which ran.",
                                      {"type": "string", "enum": [*image_spaces, "hybrid"]}),
                               _param("same_category", "Only the product's category.", {"type": "boolean"}),
                               *filters],
                "responses": answers(404, 409, 503)}},
            "/api/search": {"get": {
                "summary": "Free-text search: CLIP text-to-image, the text space and full-text search, fused.",
                "parameters": [_param("q", "The search text (not blank, no NUL characters).",
                                      {"type": "string", "maxLength": MAX_QUERY_LENGTH,
                                       "pattern": "^[^\\u0000]*\\S[^\\u0000]*$"}, required=True), k,
                               _param("space", "Use only this space (then 409 or 503 when it cannot answer).",
                                      {"type": "string", "enum": text_spaces}),
                               *filters],
                "responses": answers(404, 409, 503)}},
            "/api/search/image": {"post": {
                "summary": "Search by photo. The photo is not kept.",
                "parameters": [k, _param("space", "Image space.", {"type": "string", "enum": image_spaces}),
                               *filters],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}}}}}},
                "responses": answers(404, 409, 503)}},
        },
        "components": {"schemas": {"Hit": hit, "Results": results, "Error": error}},
    }  # fmt: skip
    return JsonResponse(document)
