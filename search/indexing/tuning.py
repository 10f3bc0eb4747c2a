"""``manage.py tune_search``: the smallest HNSW search breadth that reaches a recall target on the shop's own vectors.

For one (space, version): a sample of its stored vectors becomes the queries (an image's neighbours exclude its own
product, as "similar products" does; a text space's are the published products, as text search does). The exact
top-k of each comes from a scan of every vector in Postgres, in chunks. Half the queries tune: the breadth climbs
``LADDER`` until their recall@k reaches the target with a margin for the sample: the mean that another sample of as
many queries would show must reach it with 95 % probability (mean - 1.645 x sqrt(2) standard errors: a mean that
just touches the target on 200 queries falls short on the next 200 about half the time). The other half, never
used to choose, measure the recall recorded with it. The setting is per store (pgvector's ``hnsw.ef_search`` and
Milvus's ``ef`` differ) and every query of that version then uses it (:mod:`search.vectorstores.tuning`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.utils import timezone

from search.models import EmbeddingStatus, ImageEmbedding, ProductEmbedding, SpaceVersion
from search.vectorstores import get_store
from search.vectorstores.tuning import forced_ef, forget

logger = logging.getLogger(__name__)
LADDER = (10, 16, 24, 32, 48, 64, 100, 160, 250, 400, 640, 1000)
CHUNK = 5000
Z_ONE_SIDED_95 = 1.645


@dataclass
class Tuning:
    space: str
    version: str
    store: str
    size: int
    target: float
    ef: int | None = None
    recall: float | None = None  # on the held-out queries, with ``ef``
    reached: bool = False
    ladder: list[tuple[int, float]] = field(default_factory=list)  # (breadth, recall on the tuning queries)
    bounds: list[float] = field(default_factory=list)  # the lower confidence bound of each rung's recall


def _as_array(value: object) -> np.ndarray:
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else value, dtype=np.float32)


def _rows(row: SpaceVersion, products: bool) -> Iterator[tuple[int, int, bool, np.ndarray]]:
    """(id, product id, published, vector) of every stored vector of the version."""
    rows: Any
    values: Any
    if products:
        rows = ProductEmbedding.objects.filter(space=row.space, model_version=row.version, status=EmbeddingStatus.OK,
                                               vector__isnull=False).order_by("product_id")  # fmt: skip
        values = rows.values_list("product_id", "product_id", "product__is_active", "vector")
    else:
        rows = ImageEmbedding.objects.filter(space=row.space, model_version=row.version, status=EmbeddingStatus.OK,
                                             vector__isnull=False).order_by("image_id")  # fmt: skip
        values = rows.values_list("image_id", "image__product_id", "image__product__is_active", "vector")
    for pk, product_id, published, vector in values.iterator(chunk_size=CHUNK):
        yield int(pk), int(product_id), bool(published), _as_array(vector)


def exact_neighbours(row: SpaceVersion, queries: np.ndarray, owners: np.ndarray, *, k: int,
                     products: bool) -> list[list[int]]:  # fmt: skip
    """The exact top-``k`` ids of each query by cosine, over every vector in Postgres, read in chunks."""
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    batch: list[tuple[int, int, bool, np.ndarray]] = []

    def merge() -> None:
        nonlocal best_ids, best_scores
        ids = np.array([b[0] for b in batch], dtype=np.int64)
        product_of = np.array([b[1] for b in batch], dtype=np.int64)
        scores = queries @ np.stack([b[3] for b in batch]).T
        if products:  # text search: published products only
            scores[:, ~np.array([b[2] for b in batch])] = -np.inf
        else:  # similar products: never the query's own product
            scores[product_of[None, :] == owners[:, None]] = -np.inf
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(all_scores, order, axis=1)
        best_ids = np.take_along_axis(all_ids, order, axis=1)
        batch.clear()

    for item in _rows(row, products):
        batch.append(item)
        if len(batch) == CHUNK:
            merge()
    if batch:
        merge()
    return [[int(i) for i, s in zip(ids, scores, strict=True) if s > -np.inf]
            for ids, scores in zip(best_ids, best_scores, strict=True)]  # fmt: skip


def _recalls(search: Callable[[np.ndarray, int], list[int]], queries: np.ndarray, owners: np.ndarray,
             truth: list[list[int]], k: int) -> np.ndarray:  # fmt: skip
    """recall@k of each query."""
    return np.array([len(set(search(q, int(owner))[:k]) & set(t)) / max(1, len(t))
                     for q, owner, t in zip(queries, owners, truth, strict=True)], dtype=np.float64)  # fmt: skip


def lower_bound(recalls: np.ndarray) -> float:
    """The mean recall that another sample of as many queries reaches with 95 % probability (one-sided): the
    difference of two sample means has twice the variance of one (the mean itself for fewer than two)."""
    if len(recalls) < 2:
        return float(recalls.mean()) if len(recalls) else 1.0
    return float(recalls.mean() - Z_ONE_SIDED_95 * recalls.std(ddof=1) * np.sqrt(2.0 / len(recalls)))


def tune_version(row: SpaceVersion, *, target: float = 0.95, queries: int = 200, k: int = 10, seed: int = 0,
                 log: Callable[[str], None] = logger.info) -> Tuning:  # fmt: skip
    """Measure, record on ``row`` and return the smallest breadth of ``LADDER`` reaching ``target``."""
    store = get_store()
    products = ProductEmbedding.objects.filter(space=row.space, model_version=row.version).exists()
    sample = list(_sample(row, products, 2 * queries, seed))
    result = Tuning(space=row.space, version=row.version, store=store.tuning_key, size=_size(row, products),
                    target=target)  # fmt: skip
    if len(sample) < 4:
        log(f"{row.space} {row.version}: {len(sample)} vectors, too few to tune")
        return result
    vectors = np.stack([s[3] for s in sample])
    owners = np.array([s[1] for s in sample], dtype=np.int64)
    truth = exact_neighbours(row, vectors, owners, k=k, products=products)
    half = len(sample) // 2

    def search(query: np.ndarray, owner: int) -> list[int]:
        if products:
            return [pk for pk, _ in store.nearest_products(space=row.space, version=row.version,
                                                           dimension=row.dimension, vector=query, k=k)]  # fmt: skip
        hits = store.nearest_images(space=row.space, version=row.version, dimension=row.dimension, vector=query,
                                    k=k, exclude_product_id=owner, published_only=False)  # fmt: skip
        return [h.image_id for h in hits]

    for ef in LADDER:
        with forced_ef(ef):
            recalls = _recalls(search, vectors[:half], owners[:half], truth[:half], k)
        recall, bound = float(recalls.mean()), lower_bound(recalls)
        result.ladder.append((ef, recall))
        result.bounds.append(bound)
        log(f"{row.space} {row.version}: ef {ef:>4}  recall@{k} {recall:.3f} (tuning queries; at least {bound:.3f} "
            f"on as many others, 95 % sure)")  # fmt: skip
        result.ef = ef
        if bound >= target:
            result.reached = True
            break
    assert result.ef is not None
    with forced_ef(result.ef):
        result.recall = float(_recalls(search, vectors[half:], owners[half:], truth[half:], k).mean())
    SpaceVersion.objects.filter(pk=row.pk).update(
        tuned_ef=result.ef, tuned_recall=result.recall, tuned_target=target, tuned_store=result.store,
        tuned_size=result.size, tuned_at=timezone.now(),
    )  # fmt: skip
    forget()
    return result


def _size(row: SpaceVersion, products: bool) -> int:
    model = ProductEmbedding if products else ImageEmbedding
    return model.objects.filter(space=row.space, model_version=row.version, status=EmbeddingStatus.OK).count()


def _sample(row: SpaceVersion, products: bool, n: int, seed: int) -> Iterator[tuple[int, int, bool, np.ndarray]]:
    """``n`` stored vectors of the version, drawn at random (ids first, then their vectors)."""
    model, key = (ProductEmbedding, "product_id") if products else (ImageEmbedding, "image_id")
    ids = list(model.objects.filter(space=row.space, model_version=row.version, status=EmbeddingStatus.OK,
                                    vector__isnull=False).values_list(key, flat=True))  # fmt: skip
    chosen = sorted(np.random.default_rng(seed).permutation(len(ids))[:n].tolist())
    picked = {ids[i] for i in chosen}
    rng_order = np.random.default_rng(seed + 1)
    rows = [r for r in _rows_for(row, products, sorted(picked))]
    rng_order.shuffle(rows)  # type: ignore[arg-type]
    yield from rows


def _rows_for(row: SpaceVersion, products: bool, ids: list[int]) -> Iterator[tuple[int, int, bool, np.ndarray]]:
    values: Any
    if products:
        values = ProductEmbedding.objects.filter(space=row.space, model_version=row.version, product_id__in=ids
                                                 ).values_list("product_id", "product_id", "product__is_active",
                                                               "vector")  # fmt: skip
    else:
        values = ImageEmbedding.objects.filter(space=row.space, model_version=row.version, image_id__in=ids
                                               ).values_list("image_id", "image__product_id",
                                                             "image__product__is_active", "vector")  # fmt: skip
    for pk, product_id, published, vector in values:
        yield int(pk), int(product_id), bool(published), _as_array(vector)


def retune_grown(*, growth: float = 1.5, log: Callable[[str], None] = logger.info) -> list[Tuning]:
    """Tune again every active version whose size has grown by half (``growth``) since it was tuned, to the same
    target (the periodic sweep calls this; a version never tuned keeps the defaults until staff tune it)."""
    done = []
    for row in SpaceVersion.objects.filter(state=SpaceVersion.State.ACTIVE, tuned_size__isnull=False):
        products = ProductEmbedding.objects.filter(space=row.space, model_version=row.version).exists()
        size = _size(row, products)
        if size >= growth * max(1, row.tuned_size or 0):
            log(f"{row.space} {row.version} grew from {row.tuned_size} to {size} vectors since it was tuned: tuning")
            done.append(tune_version(row, target=row.tuned_target or 0.95, log=log))
    return done
