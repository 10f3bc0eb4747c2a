"""Similar products: the nearest images in one space's active version, one entry per product.

Shared by product pages, the API, the compare page, ``evaluate`` and the text and photo searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection

from catalog.models import Product, ProductImage
from search import embedders
from search.embedders import SpaceUnavailable
from search.models import ImageEmbedding, SpaceState, SpaceVersion
from search.querying import hybrid
from search.querying.active import active_changed, active_state
from search.vectorstores import Filters, ImageHit, get_store
from search.vectorstores.base import VersionRef

HYBRID = "hybrid"  # "Looks similar" by look and words together (search/querying/hybrid.py)


@dataclass(frozen=True)
class ProductHit:
    product_id: int
    image_id: int | None  # the product's image that matched best (None: a product with no embedded image)
    score: float  # cosine similarity of that image; for hybrid, the weighted sum of cosines


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
    (``clip``) when it is available and has vectors, else the fallback (``cnn``). Cached per process.

    Raises :class:`NotIndexed` when neither has vectors yet, :class:`SpaceUnavailable` when the space asked for
    (or, by default, the fallback) has none because its model cannot be loaded.
    """
    if space:
        return space_version_or_why(space)
    primary = str(settings.VITRINE_PRIMARY_IMAGE_SPACE)
    fallback = str(settings.VITRINE_FALLBACK_IMAGE_SPACE)
    state = active_state()
    if primary in settings.VITRINE_ENABLED_SPACES and primary in state.versions and state.available.get(primary):
        return state.versions[primary]
    if fallback in state.versions:
        return state.versions[fallback]
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


def active_version(space: str) -> SpaceVersion:
    """The active version of ``space`` (cached per process); :class:`NotIndexed` when it has none."""
    version = active_state().versions.get(space)
    if version is None:
        raise NotIndexed(f"the {space} space has no vectors yet")
    return version


@dataclass(frozen=True)
class Ranking:
    """How similar products are ranked: by one image space, or ``hybrid`` (an image space and a text space)."""

    space: str  # what the answer says it used: an image space's key, or "hybrid"
    image: SpaceVersion
    text: SpaceVersion | None = None  # hybrid only


def hybrid_text_version() -> SpaceVersion | None:
    """The text space hybrid uses (the first enabled text space) when it has an active version."""
    versions = active_state().versions
    return next((versions[key] for key in embedders.text_spaces() if key in versions), None)


def similar_ranking(space: str | None = None) -> Ranking:
    """The ranking for ``space``: an image space alone, or ``hybrid``. By default (None) hybrid when a text space
    has vectors, else the primary image space; ``hybrid`` without text vectors is the image space alone.

    Raises :class:`NotIndexed` when the image space has no vectors yet.
    """
    if space and space != HYBRID:
        return Ranking(space=space, image=image_space_version(space))
    image = image_space_version()
    text = hybrid_text_version()
    return Ranking(space=HYBRID, image=image, text=text) if text else Ranking(space=image.space, image=image)


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
                     version: SpaceVersion | None = None,
                     ranking: Ranking | None = None) -> list[ProductHit]:  # fmt: skip
    """The ``k`` products most like ``product``, itself excluded, one entry per product, best first.

    ``ranking`` (from :func:`similar_ranking`), or ``space`` (an image space, or ``hybrid``; default: hybrid when
    the text space has vectors), or ``version`` (an image space's, that space alone). Hybrid uses the weights tuned
    for this catalogue. Raises :class:`NotIndexed` when the product (or the space) has no vectors yet.
    """
    if ranking is None:
        ranking = Ranking(space=version.space, image=version) if version else similar_ranking(space)
    try:
        hits, complete = _ranked(product=product, k=k, filters=filters, ranking=ranking)
    except LookupError:
        hits, complete = None, False
    if not complete and active_changed(ranking.image, ranking.text):
        # A version this process had cached may have been retired (and dropped) by another process: a product
        # then seems to lack its vectors. Read the versions now active instead.
        return similar_products(product=product, k=k, space=ranking.space, filters=filters)
    if hits is None:
        raise NotIndexed(f"{product} has no vector in the {ranking.image.space} space yet")
    return hits


def _ranked(*, product: Product, k: int, filters: Filters | None, ranking: Ranking) -> tuple[list[ProductHit], bool]:
    """The hits, and whether they look complete: False when the product seemed to lack a vector or nothing was
    found (which a version retired meanwhile would explain)."""
    image = ranking.image
    if ranking.text is None:
        hits = similar_to_vector(vector=None, space=image.space, version=image, k=k, filters=filters,
                                 exclude_product_id=product.pk, like_product_id=product.pk)  # fmt: skip
        return hits, bool(hits)
    text = ranking.text
    weights = hybrid.hybrid_weights(image_space=image.space, text_space=text.space)
    fetch = hybrid.pool_size(k)
    while True:
        pool = get_store().similar_candidates(
            product_id=product.pk, image=VersionRef(image.space, image.version, image.dimension),
            text=VersionRef(text.space, text.version, text.dimension), pool=fetch, filters=filters,
        )  # fmt: skip
        more = pool.image_rows >= fetch or pool.text_rows >= fetch  # a search may have had more to give
        if len(pool.candidates) >= k or not more or fetch >= 5000:
            break
        fetch *= 4
    order = hybrid.hybrid_order(pool=pool, weights=weights, k=k, category_id=product.category_id)
    hits = [ProductHit(product_id=s.product_id, image_id=s.image_id, score=s.score) for s in order]
    return hits, bool(hits) and pool.query_image and pool.query_text


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
    """Published products for these ids, in this order, ready for cards (queries do not grow with k).

    One query in the usual case: the primary images with their products and categories joined, each product
    given its image as ``for_listing()`` would (a second query only for products without a primary image).
    """
    images = ProductImage.objects.filter(product_id__in=ids, is_primary=True, product__is_active=True).order_by()
    found: dict[int, Product] = {}
    for image in images.select_related("product__category"):
        product = image.product
        product._primary_images = [image]  # type: ignore[attr-defined]  # what Product.primary_image reads
        found[product.pk] = product
    if missing := [pk for pk in ids if pk not in found]:
        found.update(Product.objects.published().for_listing().in_bulk(missing))
    return [found[pk] for pk in ids if pk in found]


@dataclass(frozen=True)
class Card:
    """What a JSON result shows of a product: no model instances (see :func:`cards_in_order`)."""

    product_id: int
    title: str
    slug: str
    picture: str | None  # storage name of its primary picture's thumbnail (else the picture itself); None: none

    def picture_url(self) -> str | None:
        """As ``ProductImage.thumbnail_url`` (the picture's fields share one storage)."""
        return ProductImage._meta.get_field("thumbnail").storage.url(self.picture) if self.picture else None


def cards_in_order(ids: list[int]) -> list[Card]:
    """:func:`products_in_order` for the JSON API: the same products in the same order, as plain rows.

    Building 30 model instances (image, product, category) for ten results cost about as much as the vector search
    it follows, and composing even a ``values_list`` query half as much: this is one plain statement for the four
    columns a result needs (the primary picture joined; a product without one still comes, with no picture).
    """
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.id, p.title, p.slug, COALESCE(NULLIF(i.thumbnail, ''), i.file) FROM {Product._meta.db_table} p "
            f"LEFT JOIN {ProductImage._meta.db_table} i ON i.product_id = p.id AND i.is_primary "
            "WHERE p.id = ANY(%s) AND p.is_active",
            [[int(pk) for pk in ids]],
        )
        found = {pk: Card(pk, title, slug, picture or None) for pk, title, slug, picture in cursor.fetchall()}
    return [found[pk] for pk in ids if pk in found]
