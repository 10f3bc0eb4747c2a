"""Reads of the vector side: "similar products", shared by product pages, the API and ``evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from PIL import Image

from catalog.models import Product
from search.models import EmbeddingStatus, ImageEmbedding, SpaceState, SpaceVersion
from search.vectorstores import Filters, ImageHit, get_store


@dataclass(frozen=True)
class ProductHit:
    product_id: int
    image_id: int  # the product's image that matched best
    score: float  # cosine similarity of that image


class NotIndexed(Exception):
    """The product has no vector in this space yet (or the space has no active version)."""


def image_space_version(space: str | None = None) -> SpaceVersion:
    """The active version of ``space`` or, by default, of the primary image space: the configured one
    (``clip``) when it is available and has vectors, else the fallback (``cnn``). One query.

    Raises :class:`NotIndexed` when neither has vectors yet.
    """
    if space:
        return active_version(space)
    primary = str(settings.VITRINE_PRIMARY_IMAGE_SPACE)
    fallback = str(settings.VITRINE_FALLBACK_IMAGE_SPACE)
    available = SpaceState.objects.filter(key=OuterRef("space"), available=True)
    rows = {
        row.space: row
        for row in SpaceVersion.objects.filter(state=SpaceVersion.State.ACTIVE, space__in=[primary, fallback])
        .filter(Q(space=fallback) | Exists(available))
    }  # fmt: skip
    if primary in settings.VITRINE_ENABLED_SPACES and primary in rows:
        return rows[primary]
    if fallback in rows:
        return rows[fallback]
    raise NotIndexed(f"the {fallback} space has no vectors yet")


def primary_image_space() -> str:
    """The configured primary image space if it is available, else the fallback (``cnn``)."""
    try:
        return image_space_version().space
    except NotIndexed:
        return str(settings.VITRINE_FALLBACK_IMAGE_SPACE)


def collapse_to_products(hits: list[ImageHit], k: int) -> list[ProductHit]:
    """One entry per product (its best image), best first, at most ``k``."""
    best: dict[int, ProductHit] = {}
    for hit in hits:
        current = best.get(hit.product_id)
        if current is None or hit.score > current.score:
            best[hit.product_id] = ProductHit(product_id=hit.product_id, image_id=hit.image_id, score=hit.score)
    return sorted(best.values(), key=lambda h: (-h.score, h.product_id))[:k]


def product_query_vector(*, product: Product, space: str, version: str) -> np.ndarray:
    """The vector that stands for a product: its primary image's, else its first embedded image's."""
    rows = (
        ImageEmbedding.objects.filter(image__product=product, space=space, model_version=version,
                                      status=EmbeddingStatus.OK)
        .order_by("-image__is_primary", "image__position", "image_id")
        .values_list("vector", flat=True)[:1]
    )  # fmt: skip
    if not rows:
        raise NotIndexed(f"{product} has no vector in the {space} space yet")
    return np.asarray(rows[0], dtype=np.float32)


def similar_products(*, product: Product, k: int = 10, space: str | None = None, filters: Filters | None = None,
                     version: SpaceVersion | None = None) -> list[ProductHit]:  # fmt: skip
    """The ``k`` products whose images are nearest to ``product``'s, itself excluded, one entry per product.

    ``space`` defaults to the primary image space; pass ``version`` (from :func:`image_space_version`)
    to skip looking it up. Raises :class:`NotIndexed` when the product (or the space) has no vectors yet.
    """
    version = version or image_space_version(space)
    try:
        return similar_to_vector(vector=None, space=version.space, version=version, k=k, filters=filters,
                                 exclude_product_id=product.pk, like_product_id=product.pk)  # fmt: skip
    except LookupError:
        raise NotIndexed(f"{product} has no vector in the {version.space} space yet") from None


def active_version(space: str) -> SpaceVersion:
    version = SpaceVersion.objects.filter(space=space, state=SpaceVersion.State.ACTIVE).first()
    if version is None:
        raise NotIndexed(f"the {space} space has no vectors yet")
    return version


def similar_to_vector(
    *, vector: np.ndarray | None, space: str, version: SpaceVersion, k: int, exclude_product_id: int | None = None,
    filters: Filters | None = None, like_product_id: int | None = None,
) -> list[ProductHit]:  # fmt: skip
    """Nearest products to a query vector (or to a product's own); over-fetches images until ``k`` distinct
    products are found (products have several images)."""
    store = get_store()
    fetch = max(2 * k, 20)
    while True:
        hits = store.nearest_images(space=space, version=version.version, dimension=version.dimension,
                                    vector=vector, k=fetch, exclude_product_id=exclude_product_id,
                                    filters=filters, like_product_id=like_product_id)  # fmt: skip
        products = collapse_to_products(hits, k)
        if len(products) >= k or len(hits) < fetch or fetch >= 5000:
            return products
        fetch *= 4


# --- shopper searches ----------------------------------------------------------------------------

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
    notices: list[str]


def products_in_order(ids: list[int]) -> list[Product]:
    """Published products for these ids, in this order, ready for cards (queries do not grow with k)."""
    found = Product.objects.published().for_listing().in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


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

    ``space`` limits it to one vector space ("clip" or "text"). A source that cannot
    answer (model unavailable, no vectors yet) is left out and named in ``notices``.
    """
    from search import embedders

    rankings: dict[str, list[tuple[int, float]]] = {}
    notices: list[str] = []
    wanted = [space] if space else [key for key in ("clip", "text") if key in settings.VITRINE_ENABLED_SPACES]
    for key in wanted:
        try:
            # The index first: a space no worker could index (its model missing) is skipped without
            # this process trying, and paying for, a model load of its own.
            version = active_version(key)
            vector = embedders.load(key).embed_texts([query])[0]
        except (embedders.SpaceUnavailable, NotIndexed) as exc:
            reason = getattr(exc, "reason", str(exc))
            notices.append(f"{'Image search by text (CLIP)' if key == 'clip' else 'The text model'} is "
                           f"unavailable right now ({reason}); results come from the other sources.")  # fmt: skip
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
        return SearchOutcome(hits=single, space=space or name, sources=[name], notices=notices)
    fused: dict[int, SearchHit] = {}
    for name, ranking in rankings.items():
        for rank, (pk, score) in enumerate(ranking, start=1):
            hit = fused.setdefault(pk, SearchHit(product_id=pk, score=0.0, sources={}))
            hit.score += 1.0 / (RRF_K + rank)
            hit.sources[name] = score
    best = sorted(fused.values(), key=lambda h: (-h.score, h.product_id))[:k]
    return SearchOutcome(hits=best, space="hybrid", sources=list(rankings), notices=notices)


def photo_search(*, image: Image.Image, k: int = 24, filters: Filters | None = None,
                 space: str | None = None) -> tuple[list[ProductHit], str]:  # fmt: skip
    """Products whose images look like ``image`` (already validated, RGB). Returns (hits, space used)."""
    from search import embedders

    version = image_space_version(space)
    space = version.space
    embedder = embedders.load(space)  # warm after the first request in this process
    vector = embedder.embed_images([image])[0]
    return similar_to_vector(vector=vector, space=space, version=version, k=k, filters=filters), space


def preload_query_models() -> list[str]:
    """Load the models this process will use for text and photo queries; returns the spaces loaded."""
    import logging

    from search import embedders

    loaded: list[str] = []
    keys: list[str] = [key for key in ("clip", "text") if key in settings.VITRINE_ENABLED_SPACES]
    try:
        keys.append(image_space_version().space)
    except Exception as exc:
        logging.getLogger(__name__).info("no primary image space to preload yet: %s", exc)
    for key in dict.fromkeys(keys):
        try:
            embedders.load(key)
            loaded.append(key)
        except embedders.SpaceUnavailable as exc:
            logging.getLogger(__name__).info("query model for %s not preloaded: %s", key, exc.reason)
    return loaded
