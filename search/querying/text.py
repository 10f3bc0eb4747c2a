"""Free-text search: CLIP text-to-image, the ``text`` space and Postgres full text, fused by reciprocal rank."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q

from catalog.models import Product
from search import embedders
from search.querying.similar import NotIndexed, similar_to_vector, space_version_or_why
from search.vectorstores import Filters, get_store

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al.)


@dataclass
class SearchHit:
    product_id: int
    score: float  # fused (RRF) score for hybrid search, cosine similarity otherwise
    sources: dict[str, float]  # per-source score: cosine for vector spaces, ts_rank for full text


@dataclass
class SearchOutcome:
    hits: list[SearchHit]
    space: str  # "hybrid", or the one space that answered
    sources: list[str]
    notices: list[str]  # for staff and the API: a source left out, and why (model unavailable / not indexed yet)
    # Is any hit a close match (see close_match)? When not, the hits are only the nearest there are, and the page
    # says so instead of presenting them as answers.
    close: bool = False


def close_match(hit: SearchHit) -> bool:
    """A hit that really matches the query: full-text search found its words in the product, or a vector source
    is at least ``VITRINE_CLOSE_MATCH_SIMILARITY`` close (per space; cosine, not calibrated per model yet)."""
    if hit.sources.get("fulltext", 0.0) > 0:
        return True
    thresholds = settings.VITRINE_CLOSE_MATCH_SIMILARITY
    return any(score >= float(thresholds[name]) for name, score in hit.sources.items() if name in thresholds)


def _fts(query: str, k: int, filters: Filters | None) -> list[tuple[int, float]]:
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

    vector = SearchVector("title", weight="A", config="english") + SearchVector(
        "description", weight="B", config="english")  # fmt: skip
    search = SearchQuery(query, search_type="websearch", config="english")
    products = Product.objects.published()
    if filters is not None:
        if filters.category_path:
            products = products.filter(Q(category__path=filters.category_path)
                                       | Q(category__path__startswith=filters.category_path + "/"))  # fmt: skip
        if filters.price_min is not None:
            products = products.filter(price__gte=filters.price_min)
        if filters.price_max is not None:
            products = products.filter(price__lte=filters.price_max)
        if filters.in_stock:
            products = products.filter(stock__gt=0)
    rows = (products.annotate(document=vector, rank=SearchRank(vector, search)).filter(document=search)
            .order_by("-rank", "id").values_list("id", "rank")[:k])  # fmt: skip
    return [(pk, float(rank)) for pk, rank in rows]


def text_search(*, query: str, k: int = 48, filters: Filters | None = None, space: str | None = None) -> SearchOutcome:
    """Free-text search: CLIP text-to-image, the ``text`` space and Postgres full-text search, fused by RRF.

    ``space`` limits it to one vector space ("clip" or "text"), and then raises what keeps that space from
    answering: :class:`SpaceUnavailable` (its model cannot be loaded) or :class:`NotIndexed` (no vectors yet).
    Without it, a source that cannot answer is left out and named, with the reason, in ``notices``.
    """
    rankings: dict[str, list[tuple[int, float]]] = {}
    notices: list[str] = []
    wanted = [space] if space else [key for key in ("clip", "text") if key in settings.VITRINE_ENABLED_SPACES]
    for key in wanted:
        try:
            # The index first: a space no worker could index (its model missing) is skipped without
            # this process trying, and paying for, a model load of its own.
            version = space_version_or_why(key)
            vector = embedders.load(key).embed_texts([query])[0]
        except embedders.SpaceUnavailable as exc:
            if space:
                raise
            notices.append(f"{key}: model unavailable ({exc.reason}); left out of these results")
            continue
        except NotIndexed as exc:
            if space:
                raise
            notices.append(f"{key}: not indexed yet ({exc}); left out of these results")
            continue
        # A vector search always returns k neighbours; below this similarity they are noise, not matches.
        floor = float(settings.VITRINE_MIN_QUERY_SIMILARITY.get(key, 0.0))
        if embedders.IMAGE in embedders.modalities(key):
            nearest = similar_to_vector(vector=vector, space=key, version=version, k=k, filters=filters)
            rankings[key] = [(h.product_id, h.score) for h in nearest if h.score >= floor]
        else:
            found = get_store().nearest_products(space=key, version=version.version, dimension=version.dimension,
                                                 vector=vector, k=k, filters=filters)  # fmt: skip
            rankings[key] = [(pk, 1.0 - distance) for pk, distance in found if 1.0 - distance >= floor]
    if space is None:
        rankings["fulltext"] = _fts(query, k, filters)
    if len(rankings) == 1:
        ((name, ranking),) = rankings.items()
        single = [SearchHit(product_id=pk, score=score, sources={name: score}) for pk, score in ranking]
        return SearchOutcome(hits=single, space=space or name, sources=[name], notices=notices,
                             close=any(close_match(hit) for hit in single))  # fmt: skip
    fused: dict[int, SearchHit] = {}
    for name, ranking in rankings.items():
        for rank, (pk, score) in enumerate(ranking, start=1):
            hit = fused.setdefault(pk, SearchHit(product_id=pk, score=0.0, sources={}))
            hit.score += 1.0 / (RRF_K + rank)
            hit.sources[name] = score
    best = sorted(fused.values(), key=lambda h: (-h.score, h.product_id))[:k]
    return SearchOutcome(hits=best, space="hybrid", sources=list(rankings), notices=notices,
                         close=any(close_match(hit) for hit in best))  # fmt: skip
