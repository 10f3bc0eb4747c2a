"""Search quality against ground truth: HNSW "similar products" against an exact cosine scan of the same stored
vectors (recall@k, with and without a same-category filter), and photo search finding each image's own product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from catalog.models import Product, ProductImage
from catalog.services import image_inspect
from search.models import EmbeddingStatus, ImageEmbedding
from search.querying import photo, similar
from search.vectorstores import Filters


def _exact_neighbours(vectors: np.ndarray, product_of: np.ndarray, query: np.ndarray, exclude: int, k: int,
                      allowed: np.ndarray | None) -> list[int]:  # fmt: skip
    """Top-k products by best-image cosine, brute force."""
    scores = vectors @ query
    mask = product_of != exclude
    if allowed is not None:
        mask &= allowed
    order = np.argsort(-np.where(mask, scores, -np.inf))
    seen: list[int] = []
    for index in order:
        if not mask[index]:
            break
        product = int(product_of[index])
        if product not in seen:
            seen.append(product)
            if len(seen) == k:
                break
    return seen


def similar_recall(*, space: str, k: int = 10, limit: int | None = None,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """recall@k of ``similar_products`` (HNSW, iterative scans) against the exact answer."""
    version = similar.active_version(space)
    rows = list(
        ImageEmbedding.objects.filter(space=space, model_version=version.version, status=EmbeddingStatus.OK,
                                      image__product__is_active=True)
        .values_list("image__product_id", "image__product__category__path", "vector")
    )  # fmt: skip
    product_of = np.array([r[0] for r in rows])
    paths = np.array([r[1] or "" for r in rows], dtype=object)
    vectors = np.stack([np.asarray(r[2], dtype=np.float32) for r in rows])
    products = list(Product.objects.published().filter(pk__in=set(product_of.tolist())).select_related("category"))
    if limit:
        rng = np.random.default_rng(0)
        products = [products[i] for i in rng.choice(len(products), size=min(limit, len(products)), replace=False)]
    recalls: dict[str, list[float]] = {"all": [], "same category": []}
    for product in products:
        query = similar.product_query_vector(product=product, space=space, version=version.version)
        for label, path in (("all", None), ("same category", product.category.path if product.category else None)):
            if label == "same category" and path is None:
                continue
            filters = Filters(category_path=path) if path else None
            allowed = None
            if path:
                allowed = np.array([p == path or p.startswith(path + "/") for p in paths])
            exact = _exact_neighbours(vectors, product_of, query, product.pk, k, allowed)
            if not exact:
                continue
            got = [h.product_id for h in similar.similar_products(product=product, k=k, space=space,
                                                                     filters=filters)]  # fmt: skip
            recalls[label].append(len(set(got) & set(exact)) / len(exact))
        if progress:
            progress(1)
    return {f"recall@{k} ({label})": float(np.mean(v)) for label, v in recalls.items() if v} | {
        "queries": len(products),
        "vectors": len(rows),
        "space": space,
    }


def photo_self_retrieval(*, space: str | None = None, limit: int | None = None,
                         progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Upload each product's primary image to photo search; how often is its own product first?"""
    images = list(ProductImage.objects.filter(is_primary=True, product__is_active=True).select_related("product"))
    if limit:
        images = images[:limit]
    first = 0
    used = space
    for image in images:
        with image.file.open("rb") as fh:
            inspected = image_inspect(fh.read())
        hits, used = photo.photo_search(image=inspected.rgb, k=5, space=space)
        first += bool(hits) and hits[0].product_id == image.product_id
        if progress:
            progress(1)
    return {"photo_self_retrieval": first / len(images) if images else 0.0, "images": len(images), "space": used}
