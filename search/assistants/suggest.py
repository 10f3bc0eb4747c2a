"""Category and colour suggestions for products that have none, from what they look like and what they are called.

A weighted vote of the nearest products' categories: the ``K`` nearest by picture (the image space "Looks similar"
uses) and the ``K`` nearest by title and description (the first text space), the product itself excluded. Each
neighbour votes for its category with ``weight × cosine ** POWER`` (sharper powers trust the closest ones more);
the confidence of a category is its share of all the votes. Measured with ``evaluate --suggest``
(leave-one-out; ``search.lab.suggestions``), which chose the settings in ``VITRINE_SUGGEST``.

Colour comes from the picture's dominant colours (``search.colours``), the largest named share.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.urls import reverse

from catalog.hooks import UploadNote
from catalog.models import Category, Product, ProductImage
from search.embedders import SpaceUnavailable
from search.indexing.colouring import image_colours_compute
from search.indexing.sources import ImageUnreadable, load_image_rgb
from search.indexing.versions import space_load
from search.models import ImageColour, ProductEmbedding
from search.querying import similar
from search.vectorstores import get_store


@dataclass(frozen=True)
class Vote:
    category_id: int
    confidence: float  # share of all the votes, 0..1


def options() -> dict[str, float]:
    return {"K": 10, "IMAGE_WEIGHT": 1.0, "TEXT_WEIGHT": 2.0, "POWER": 4.0, "MIN_CONFIDENCE": 0.4,
            **settings.VITRINE_SUGGEST}  # fmt: skip


def vote(*, image: Iterable[tuple[int | None, float]], text: Iterable[tuple[int | None, float]],
         opts: dict[str, float] | None = None) -> list[Vote]:  # fmt: skip
    """Categories ranked by their share of the weighted votes of ``(category_id, cosine)`` neighbours; neighbours
    without a category abstain."""
    opts = opts or options()
    weights: dict[int, float] = defaultdict(float)
    for neighbours, weight in ((image, opts["IMAGE_WEIGHT"]), (text, opts["TEXT_WEIGHT"])):
        for category_id, cosine in neighbours:
            if category_id is not None and cosine > 0:
                weights[category_id] += weight * cosine ** opts["POWER"]
    total = sum(weights.values())
    if total <= 0:
        return []
    return sorted((Vote(pk, w / total) for pk, w in weights.items()), key=lambda v: -v.confidence)


def _categories(product_ids: Iterable[int]) -> dict[int, int | None]:
    return dict(Product.objects.filter(pk__in=set(product_ids)).values_list("pk", "category_id"))


def neighbours(*, product_id: int, image_vector: np.ndarray | None = None, text_vector: np.ndarray | None = None,
               k: int) -> tuple[list[tuple[int | None, float]], list[tuple[int | None, float]]]:  # fmt: skip
    """(category, cosine) of the ``k`` nearest other products by picture and by text. Without a vector, the
    product's own stored one is used; a space with no vectors (or none for this product) gives no neighbours."""
    store = get_store()
    by_image: dict[int, float] = {}
    try:
        version = similar.image_space_version()
        hits = store.nearest_images(space=version.space, version=version.version, dimension=version.dimension,
                                    vector=image_vector, k=3 * k, exclude_product_id=product_id,
                                    published_only=False, like_product_id=None if image_vector is not None
                                    else product_id)  # fmt: skip
        for hit in hits:
            by_image[hit.product_id] = max(by_image.get(hit.product_id, -1.0), hit.score)
    except (LookupError, similar.NotIndexed, SpaceUnavailable):
        pass
    by_text: dict[int, float] = {}
    text = similar.hybrid_text_version()
    if text is not None:
        if text_vector is None:
            row = ProductEmbedding.objects.filter(product_id=product_id, space=text.space, model_version=text.version,
                                                  status="ok").values_list("vector", flat=True).first()  # fmt: skip
            text_vector = np.asarray(row, dtype=np.float32) if row is not None else None
        if text_vector is not None:
            found = store.nearest_products(space=text.space, version=text.version, dimension=text.dimension,
                                           vector=text_vector, k=k + 1)  # fmt: skip
            for pk, distance in found:
                if pk != product_id:
                    by_text[pk] = 1.0 - distance
    image_top = sorted(by_image.items(), key=lambda kv: -kv[1])[:k]
    text_top = sorted(by_text.items(), key=lambda kv: -kv[1])[:k]
    categories = _categories([pk for pk, _ in image_top + text_top])
    return ([(categories.get(pk), s) for pk, s in image_top], [(categories.get(pk), s) for pk, s in text_top])


def category_suggest(*, product: Product, image_vector: np.ndarray | None = None,
                     text_vector: np.ndarray | None = None) -> list[Vote]:  # fmt: skip
    """The product's likely categories, best first, with their confidence."""
    opts = options()
    image, text = neighbours(product_id=product.pk, image_vector=image_vector, text_vector=text_vector,
                             k=int(opts["K"]))  # fmt: skip
    return vote(image=image, text=text, opts=opts)


def colour_suggest(*, image: ProductImage, rgb: object | None = None) -> str:
    """The picture's largest dominant colour: stored by the worker, or computed from ``rgb``."""
    stored = ImageColour.objects.filter(image=image).values_list("names", flat=True).first()
    if stored:
        return str(stored[0])
    if rgb is None:
        return ""
    found = image_colours_compute(image=rgb)  # type: ignore[arg-type]
    return found[0][0] if found else ""


def _in_process_vectors(image: ProductImage) -> tuple[np.ndarray | None, np.ndarray | None, object | None]:
    """The new picture's image-space vector, its product's text vector and its decoded pixels, computed here (the
    worker has not stored them yet); None where a model cannot load."""
    image_vector = text_vector = rgb = None
    try:
        embedder = space_load(similar.image_space_version().space)
        rgb = load_image_rgb(image, embedder)
        image_vector = np.asarray(embedder.encode_batch([embedder.preprocess(rgb)])[0], dtype=np.float32)
    except (SpaceUnavailable, similar.NotIndexed, ImageUnreadable):
        pass
    text = similar.hybrid_text_version()
    if text is not None:
        try:
            product = image.product
            words = "\n".join(part for part in (product.title, product.description) if part)
            text_vector = np.asarray(space_load(text.space).embed_texts([words])[0], dtype=np.float32)
        except SpaceUnavailable:
            pass
    return image_vector, text_vector, rgb


def suggestion_notes(images: Sequence[ProductImage]) -> dict[int, list[UploadNote]]:
    """A category (with its confidence) for each new picture whose product has none, and a colour where the
    product has none, each with a one-click accept."""
    notes: dict[int, list[UploadNote]] = {}
    paths = dict(Category.objects.values_list("pk", "path"))
    names = dict(Category.objects.values_list("pk", "name"))
    for image in images:
        product = image.product
        if product.category_id and product.color:
            continue
        image_vector, text_vector, rgb = _in_process_vectors(image)
        accept = reverse("search:suggestion_accept", args=[product.pk])
        items = notes.setdefault(image.pk, [])
        if not product.category_id:
            votes = category_suggest(product=product, image_vector=image_vector, text_vector=text_vector)
            if votes and votes[0].category_id in paths:
                best = votes[0]
                items.append(UploadNote(kind="category", text=f"suggested category: {names[best.category_id]} "
                                        f"({best.confidence:.0%} of the look-alikes' votes)", accept_url=accept,
                                        value=paths[best.category_id], confidence=best.confidence))  # fmt: skip
        if not product.color:
            colour = colour_suggest(image=image, rgb=rgb)
            if colour:
                items.append(UploadNote(kind="colour", text=f"suggested colour: {colour}", accept_url=accept,
                                        value=colour))  # fmt: skip
    return {pk: items for pk, items in notes.items() if items}
