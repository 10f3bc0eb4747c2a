"""Embedding one item: an image in an image space, a product's text in a text space. Idempotent upserts."""

from __future__ import annotations

import logging

import numpy as np

from catalog.models import Product, ProductImage
from search import embedders
from search.assistants.duplicates import duplicates_after_embed
from search.embedders import SpaceUnavailable
from search.indexing.colouring import image_colours_compute, image_colours_save, images_without_colours
from search.indexing.sources import ImageUnreadable, load_image_rgb, product_text, product_text_hash
from search.indexing.versions import current_version, space_load, version_activate_if_complete
from search.models import EmbeddingStatus, ImageEmbedding, ProductEmbedding
from search.vectorstores import get_store

logger = logging.getLogger(__name__)


class InvalidVector(ValueError):
    """A model produced something that must not be stored."""


def validate_vectors(vectors: np.ndarray, *, dimension: int) -> np.ndarray:
    """Right shape, finite, non-zero; returns float32."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dimension:
        raise InvalidVector(f"expected vectors of dimension {dimension}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidVector("the model produced NaN or infinite values")
    if (np.linalg.norm(array, axis=1) < 1e-6).any():
        raise InvalidVector("the model produced an all-zero vector")
    return array


# Spaces this process has said are unavailable, with the reason it gave: one line per space and reason, not one
# per image (a catalogue import would otherwise log every image for every model that cannot load).
_said_unavailable: dict[str, str] = {}


def _log_unavailable_once(space: str, reason: str) -> None:
    if _said_unavailable.get(space) != reason:
        _said_unavailable[space] = reason
        logger.warning("space %s is unavailable, its images are skipped until it loads: %s", space, reason)


def image_failure_record(*, image_id: int, space: str, version: str, reason: str) -> int:
    """Count a failed attempt and keep the reason; the image counts as failed until a later attempt succeeds."""
    row, _ = ImageEmbedding.objects.get_or_create(
        image_id=image_id, space=space, model_version=version,
        defaults={"status": EmbeddingStatus.FAILED, "vector": None, "attempts": 0},
    )  # fmt: skip
    if row.status == EmbeddingStatus.OK and row.vector is not None:
        return row.attempts
    row.attempts += 1
    row.error = reason[:2000]
    row.status = EmbeddingStatus.FAILED
    row.vector = None
    row.save()
    return row.attempts


def image_embed(*, image_id: int, space: str, force: bool = False) -> str:
    """Embed one image in one space; idempotent. Returns "ok", "exists", "skipped" or "failed".

    A missing or undecodable file is failed at once; other errors propagate so the
    task can retry (with :func:`image_embed_failed` recording each attempt).
    """
    try:
        embedder = space_load(space)
    except SpaceUnavailable as exc:
        _log_unavailable_once(space, exc.reason)
        return "skipped"
    image = ProductImage.objects.filter(pk=image_id).first()
    if image is None:
        return "skipped"  # deleted since it was queued
    version = embedder.version
    if not force and ImageEmbedding.objects.filter(image_id=image_id, space=space, model_version=version,
                                                   status=EmbeddingStatus.OK).exists():  # fmt: skip
        return "exists"
    try:
        rgb = load_image_rgb(image, embedder)
    except ImageUnreadable as exc:
        image_failure_record(image_id=image_id, space=space, version=version, reason=str(exc))
        return "failed"
    if images_without_colours(image_ids=[image_id]):  # once per picture, by whichever space embeds it first
        image_colours_save(colours={image_id: image_colours_compute(image=rgb)})
    vectors = validate_vectors(embedder.encode_batch([embedder.preprocess(rgb)]), dimension=embedder.dimension)
    get_store().upsert_images(space=space, version=version, items=[(image_id, vectors[0])])
    version_activate_if_complete(space=space)
    duplicates_after_embed(image_id=image_id, product_id=image.product_id, vector=vectors[0], space=space,
                           version=version, dimension=embedder.dimension)  # fmt: skip
    return "ok"


def image_embed_failed(*, image_id: int, space: str, reason: str) -> None:
    """Record a failed attempt (the task calls this on every error, before it retries or gives up)."""
    embedder = embedders.get(space)
    version = embedder.version if embedder.loaded else current_version(space)
    if version:
        image_failure_record(image_id=image_id, space=space, version=version, reason=reason)


def product_embed(*, product_id: int, space: str) -> str:
    """Embed a product's title + description in a text space; skips when the text has not changed."""
    try:
        embedder = space_load(space)
    except SpaceUnavailable:
        return "skipped"
    product = Product.objects.filter(pk=product_id).first()
    if product is None:
        return "skipped"
    text = product_text(product)
    source_hash = product_text_hash(text)
    if ProductEmbedding.objects.filter(product=product, space=space, model_version=embedder.version,
                                       source_hash=source_hash, status=EmbeddingStatus.OK).exists():  # fmt: skip
        return "exists"
    vector = validate_vectors(embedder.embed_texts([text]), dimension=embedder.dimension)[0]
    get_store().upsert_products(space=space, version=embedder.version, items=[(product.pk, vector, source_hash)])
    version_activate_if_complete(space=space)
    return "ok"
