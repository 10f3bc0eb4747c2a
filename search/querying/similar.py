"""Similar products: the nearest images in one space's active version, one entry per product.

Shared by product pages, the API, the compare page, ``evaluate`` and the text and photo searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db.models import Exists, OuterRef, Q

from catalog.models import Product
from search import embedders
from search.embedders import SpaceUnavailable
from search.models import ImageEmbedding, SpaceState, SpaceVersion
from search.vectorstores import Filters, ImageHit, get_store


@dataclass(frozen=True)
class ProductHit:
    product_id: int
    image_id: int  # the product's image that matched best
    score: float  # cosine similarity of that image


class NotIndexed(Exception):
    """The product has no vector in this space yet (or the space has no active version): wait for the workers."""


def space_unavailable_reason(space: str) -> str | None:
    """Why ``space``'s model cannot be loaded, as the last process that tried recorded it; None when it loaded, or
    when nobody has tried yet. A model that is unavailable will not index anything: not the same as "not yet"."""
    return SpaceState.objects.filter(key=space).unavailable_reasons().get(space)


def space_version_or_why(space: str) -> SpaceVersion:
    """The active version of ``space``; raises :class:`SpaceUnavailable` (its model cannot be loaded, with the
    reason) or :class:`NotIndexed` (it has no vectors yet) when there is none."""
    try:
        return active_version(space)
    except NotIndexed:
        reason = space_unavailable_reason(space)
        if reason is None:
            try:
                embedders.get(space).check()  # no worker has said yet: the cheap check loads no model
            except SpaceUnavailable as exc:
                reason = exc.reason
            except Exception as exc:  # a configuration the check cannot even read is no model either
                reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        if reason is not None:
            raise SpaceUnavailable(reason) from None
        raise


def image_space_version(space: str | None = None) -> SpaceVersion:
    """The active version of ``space`` or, by default, of the primary image space: the configured one
    (``clip``) when it is available and has vectors, else the fallback (``cnn``). One query.

    Raises :class:`NotIndexed` when neither has vectors yet, :class:`SpaceUnavailable` when the space asked for
    (or, by default, the fallback) has none because its model cannot be loaded.
    """
    if space:
        return space_version_or_why(space)
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
    reason = space_unavailable_reason(fallback)
    if reason is not None:
        raise SpaceUnavailable(f"the {fallback} model is unavailable: {reason}")
    raise NotIndexed(f"the {fallback} space has no vectors yet")


def primary_image_space() -> str:
    """The configured primary image space if it is available, else the fallback (``cnn``)."""
    try:
        return image_space_version().space
    except (NotIndexed, SpaceUnavailable):
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
    vector = ImageEmbedding.objects.product_vector(product_id=product.pk, space=space, version=version)
    if vector is None:
        raise NotIndexed(f"{product} has no vector in the {space} space yet")
    return vector


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


def products_in_order(ids: list[int]) -> list[Product]:
    """Published products for these ids, in this order, ready for cards (queries do not grow with k)."""
    found = Product.objects.published().for_listing().in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]
