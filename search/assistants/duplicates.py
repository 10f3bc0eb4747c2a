"""Near-duplicates: pictures of two different products that look nearly identical in an image space.

The worker calls :func:`duplicates_after_embed` each time it stores a picture's vector in one of the spaces of
``VITRINE_DUPLICATE_THRESHOLDS`` (thresholds chosen with ``benchmark --duplicates``). A pair is recorded once per
pair of products (:class:`~search.models.PossibleDuplicate`), with its best cosine per space; a second worker, or
the same pair found again from the other product, only raises the scores. Staff review the pairs in the admin:
merge the pictures into one product, call them not a duplicate (remembered), or hide one of the two products.

The upload page and ``import_images`` ask :func:`lookalike_notes` about the pictures they just added: the same
search, computed in that process at once (a worker may take a while), including the batch's earlier pictures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Func, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog import services as catalog_services
from catalog.hooks import UploadNote
from catalog.models import Product, ProductImage
from search.embedders import SpaceUnavailable
from search.indexing.sources import ImageUnreadable, load_image_rgb
from search.indexing.versions import current_version, space_load
from search.models import ImageEmbedding, PossibleDuplicate, SpaceState, SpaceVersion
from search.vectorstores import get_store

logger = logging.getLogger(__name__)

NEIGHBOURS = 10  # nearest pictures looked at; more than that many duplicates of one picture is a catalogue problem


@dataclass(frozen=True)
class Match:
    image_id: int
    product_id: int
    score: float


def thresholds() -> dict[str, float]:
    """The duplicate spaces that are enabled, with their thresholds."""
    return {space: float(t) for space, t in settings.VITRINE_DUPLICATE_THRESHOLDS.items()
            if space in settings.VITRINE_ENABLED_SPACES}  # fmt: skip


def duplicates_find(*, product_id: int, vector: np.ndarray, space: str, version: str, dimension: int) -> list[Match]:
    """Other products' pictures at or above the space's threshold to ``vector``, best first (hidden ones too:
    a draft can be a duplicate as well)."""
    threshold = thresholds().get(space)
    if threshold is None:
        return []
    hits = get_store().nearest_images(space=space, version=version, dimension=dimension, vector=vector,
                                      k=NEIGHBOURS, exclude_product_id=product_id, published_only=False)  # fmt: skip
    return [Match(h.image_id, h.product_id, round(h.score, 4)) for h in hits if h.score >= threshold]


_UPSERT = """
INSERT INTO search_possibleduplicate (product_low_id, product_high_id, image_low_id, image_high_id, scores, score,
                                      space, status, found_at)
VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, 'open', %s)
ON CONFLICT (product_low_id, product_high_id) DO UPDATE SET
    scores = search_possibleduplicate.scores
             || jsonb_build_object(EXCLUDED.space, GREATEST(EXCLUDED.score,
                    COALESCE((search_possibleduplicate.scores ->> EXCLUDED.space)::float, 0))),
    image_low_id = CASE WHEN EXCLUDED.score > search_possibleduplicate.score THEN EXCLUDED.image_low_id
                        ELSE search_possibleduplicate.image_low_id END,
    image_high_id = CASE WHEN EXCLUDED.score > search_possibleduplicate.score THEN EXCLUDED.image_high_id
                         ELSE search_possibleduplicate.image_high_id END,
    space = CASE WHEN EXCLUDED.score > search_possibleduplicate.score THEN EXCLUDED.space
                 ELSE search_possibleduplicate.space END,
    score = GREATEST(search_possibleduplicate.score, EXCLUDED.score)
"""


def duplicates_record(*, image_id: int, product_id: int, matches: Sequence[Match], space: str) -> int:
    """Record each match as a pair (idempotent, safe under concurrent workers: one row per pair of products, the
    best score per space kept; a reviewed pair keeps its decision). Returns how many matches were given."""
    with transaction.atomic(), connection.cursor() as cursor:
        for match in matches:
            mine = (product_id, image_id)
            theirs = (match.product_id, match.image_id)
            low, high = (mine, theirs) if product_id < match.product_id else (theirs, mine)
            cursor.execute(_UPSERT, [low[0], high[0], low[1], high[1], json.dumps({space: match.score}), match.score,
                                     space, timezone.now()])  # fmt: skip
    return len(matches)


def duplicates_after_embed(*, image_id: int, product_id: int, vector: np.ndarray, space: str, version: str,
                           dimension: int) -> int:  # fmt: skip
    """The worker stored a picture's vector: record the other products it nearly duplicates. Never raises for a
    store or database problem of its own (the vector is stored; the next embedding finds the pair)."""
    if space not in thresholds():
        return 0
    try:
        matches = duplicates_find(product_id=product_id, vector=vector, space=space, version=version,
                                  dimension=dimension)  # fmt: skip
        return duplicates_record(image_id=image_id, product_id=product_id, matches=matches, space=space)
    except Exception:
        logger.exception("duplicate check of image %s in %s failed", image_id, space)
        return 0


def lookalike_notes(images: Sequence[ProductImage]) -> dict[int, list[UploadNote]]:
    """Says "looks like existing product X" for each new picture that nearly duplicates another product's (in the
    catalogue, or earlier in the same batch), computed now in this process; the pairs are recorded as the worker
    would. Spaces whose model cannot load here are left out."""
    notes: dict[int, dict[int, float]] = {}
    for space, threshold in thresholds().items():
        try:
            embedder = space_load(space)
        except SpaceUnavailable:
            continue
        batch: list[tuple[ProductImage, np.ndarray]] = []
        for image in images:
            try:
                rgb = load_image_rgb(image, embedder)
            except ImageUnreadable:
                continue
            vector = np.asarray(embedder.encode_batch([embedder.preprocess(rgb)])[0], dtype=np.float32)
            vector /= max(float(np.linalg.norm(vector)), 1e-12)
            matches = duplicates_find(product_id=image.product_id, vector=vector, space=space,
                                      version=embedder.version, dimension=embedder.dimension)  # fmt: skip
            matches += [Match(other.pk, other.product_id, round(float(vector @ seen), 4)) for other, seen in batch
                        if other.product_id != image.product_id and float(vector @ seen) >= threshold]  # fmt: skip
            duplicates_record(image_id=image.pk, product_id=image.product_id, matches=matches, space=space)
            for match in matches:
                found = notes.setdefault(image.pk, {})
                found[match.product_id] = max(found.get(match.product_id, 0.0), match.score)
            batch.append((image, vector))
    products = Product.objects.in_bulk({pk for found in notes.values() for pk in found})
    return {
        image_id: [UploadNote(kind="lookalike", text=f"looks like existing product “{products[pk].title}” (#{pk})",
                              url=products[pk].get_absolute_url())
                   for pk, _ in sorted(found.items(), key=lambda kv: -kv[1]) if pk in products]
        for image_id, found in notes.items()
    }  # fmt: skip


# --- staff decisions ----------------------------------------------------------------------------------


def _reviewed(pair: PossibleDuplicate, status: str, user: object | None) -> None:
    PossibleDuplicate.objects.filter(pk=pair.pk).update(status=status, reviewed_at=timezone.now(),
                                                        reviewed_by=user)  # fmt: skip


class AlreadyMerged(ValueError):
    """Another staff member merged this pair first."""


def duplicate_merge(*, pair: PossibleDuplicate, keep: Product, user: object | None = None) -> int:
    """Move the other product's pictures onto ``keep`` and hide the other product. Returns pictures moved.

    The pair's row is locked first: two staff merging one pair at once, each keeping another product, would
    otherwise move the pictures back and forth and hide both products. The second is refused."""
    other_id = pair.product_high_id if keep.pk == pair.product_low_id else pair.product_low_id
    if keep.pk not in (pair.product_low_id, pair.product_high_id):
        raise ValueError("the product to keep is not one of the pair")
    with transaction.atomic():
        status = PossibleDuplicate.objects.select_for_update().filter(pk=pair.pk).values_list("status", flat=True)
        if status.first() == PossibleDuplicate.Status.MERGED:
            raise AlreadyMerged("this pair was merged already")
        moved = catalog_services.product_images_move(source=Product.objects.get(pk=other_id), target=keep)
        _reviewed(pair, PossibleDuplicate.Status.MERGED, user)
    return moved


def duplicate_dismiss(*, pair: PossibleDuplicate, user: object | None = None) -> None:
    """Not a duplicate: remembered; the pair is never shown for review again."""
    _reviewed(pair, PossibleDuplicate.Status.NOT_DUPLICATE, user)


def duplicate_hide(*, pair: PossibleDuplicate, hide: Product, user: object | None = None) -> None:
    """Hide one of the two products from shoppers (nothing is deleted)."""
    if hide.pk not in (pair.product_low_id, pair.product_high_id):
        raise ValueError("the product to hide is not one of the pair")
    with transaction.atomic():
        catalog_services.products_update(product_ids=[hide.pk], is_active=False)
        _reviewed(pair, PossibleDuplicate.Status.HIDDEN, user)


def annotate_counts(states: QuerySet[SpaceState]) -> QuerySet[SpaceState]:
    """Embedding spaces with ``duplicates_open`` and ``duplicates_reviewed``: the pairs whose best score is in
    that space, to review and reviewed (in the same query as the spaces)."""
    pairs = PossibleDuplicate.objects.filter(space=OuterRef("key")).order_by().values("space")

    def count(condition: Q) -> Func:
        return Coalesce(Subquery(pairs.filter(condition).annotate(n=Count("pk")).values("n")[:1]), 0)

    is_open = Q(status=PossibleDuplicate.Status.OPEN)
    return states.annotate(duplicates_open=count(is_open), duplicates_reviewed=count(~is_open))


def duplicates_after_bulk(*, image_ids: Sequence[int], space: str) -> int:
    """The sweep's batches embed what the upload path missed (a worker that was down): look for their duplicates
    too, from the vectors just stored. Returns how many matches were recorded."""
    if space not in thresholds() or not image_ids:
        return 0
    try:
        return _after_bulk(image_ids=image_ids, space=space)
    except Exception:
        logger.exception("duplicate check of a batch of %d images in %s failed", len(image_ids), space)
        return 0


def _after_bulk(*, image_ids: Sequence[int], space: str) -> int:
    version = current_version(space)
    if version is None:
        return 0
    dimension = SpaceVersion.objects.filter(space=space, version=version).values_list("dimension", flat=True).first()
    rows = (ImageEmbedding.objects.ok(space=space, version=version).filter(image_id__in=list(image_ids))
            .values_list("image_id", "image__product_id", "vector"))  # fmt: skip
    found = 0
    for image_id, product_id, stored in rows:
        vector = np.asarray(stored, dtype=np.float32)
        found += duplicates_after_embed(image_id=image_id, product_id=product_id, space=space, version=version,
                                        vector=vector, dimension=int(dimension or 0))  # fmt: skip
    return found
