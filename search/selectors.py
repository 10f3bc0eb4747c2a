"""Reads of the vector side: "similar products", shared by product pages, the API and ``evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings

from catalog.models import Product
from search.models import EmbeddingStatus, ImageEmbedding, SpaceState, SpaceVersion
from search.vectorstores import ImageHit, get_store


@dataclass(frozen=True)
class ProductHit:
    product_id: int
    image_id: int  # the product's image that matched best
    score: float  # cosine similarity of that image


class NotIndexed(Exception):
    """The product has no vector in this space yet (or the space has no active version)."""


def space_is_available(space: str) -> bool:
    state = SpaceState.objects.filter(key=space).first()
    return bool(state and state.available and space in settings.VITRINE_ENABLED_SPACES)


def primary_image_space() -> str:
    """The configured primary image space if it is available, else the fallback (``cnn``)."""
    primary = str(settings.VITRINE_PRIMARY_IMAGE_SPACE)
    if space_is_available(primary) and SpaceVersion.objects.filter(space=primary, state="active").exists():
        return str(primary)
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


def similar_products(*, product: Product, k: int = 10, space: str | None = None) -> list[ProductHit]:
    """The ``k`` products whose images are nearest to ``product``'s, itself excluded, one entry per product.

    Raises :class:`NotIndexed` when the product (or the space) has no vectors yet.
    """
    space = space or primary_image_space()
    version = SpaceVersion.objects.filter(space=space, state=SpaceVersion.State.ACTIVE).first()
    if version is None:
        raise NotIndexed(f"the {space} space has no vectors yet")
    query = product_query_vector(product=product, space=space, version=version.version)
    return similar_to_vector(vector=query, space=space, version=version, k=k, exclude_product_id=product.pk)


def similar_to_vector(*, vector: np.ndarray, space: str, version: SpaceVersion, k: int,
                      exclude_product_id: int | None = None) -> list[ProductHit]:  # fmt: skip
    """Nearest products to a query vector; over-fetches images until ``k`` distinct products are found."""
    store = get_store()
    fetch = max(4 * k, 20)
    while True:
        hits = store.nearest_images(space=space, version=version.version, dimension=version.dimension,
                                    vector=vector, k=fetch, exclude_product_id=exclude_product_id)  # fmt: skip
        products = collapse_to_products(hits, k)
        if len(products) >= k or len(hits) < fetch or fetch >= 5000:
            return products
        fetch *= 4
