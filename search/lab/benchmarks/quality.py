"""Search quality against ground truth: HNSW "similar products" against an exact cosine scan of the same stored
vectors (recall@k, with and without a same-category filter), for one image space or for hybrid (its image search, its
text search, and its ranking against the same weights applied to every product), and photo search finding each
image's own product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from catalog.models import Product, ProductImage
from catalog.services import image_inspect
from search.models import EmbeddingStatus, ImageEmbedding, ProductEmbedding, SpaceVersion
from search.querying import hybrid, photo, similar
from search.vectorstores import Filters, get_store


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


def _sample(products: list[Product], limit: int | None) -> list[Product]:
    if not limit:
        return products
    rng = np.random.default_rng(0)
    return [products[i] for i in rng.choice(len(products), size=min(limit, len(products)), replace=False)]


class _Exhaustive:
    """Every published product's vectors in hybrid's two spaces, for answers computed over all of them."""

    def __init__(self, image: SpaceVersion, text: SpaceVersion) -> None:
        self.products = list(Product.objects.published().select_related("category").order_by("pk"))
        self.index = {p.pk: i for i, p in enumerate(self.products)}
        self.paths = [p.category.path if p.category else "" for p in self.products]
        rows = (ImageEmbedding.objects.filter(space=image.space, model_version=image.version, status=EmbeddingStatus.OK,
                                              image__product__is_active=True)
                .values_list("image__product_id", "vector"))  # fmt: skip
        owners, vectors = zip(*rows, strict=True) if rows else ((), ())
        self.image_owner = np.array([self.index[pk] for pk in owners], dtype=int)
        self.image_vectors = np.array(vectors, dtype=np.float32).reshape(len(owners), image.dimension)
        texts = dict(ProductEmbedding.objects.filter(space=text.space, model_version=text.version,
                                                     status=EmbeddingStatus.OK, product__is_active=True)
                     .values_list("product_id", "vector"))  # fmt: skip
        self.text_vectors = np.array([texts.get(p.pk, np.full(text.dimension, np.nan)) for p in self.products],
                                     dtype=np.float32)  # fmt: skip
        self.texts = texts

    def scores(self, q_image: np.ndarray | None, q_text: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Each product's best image cosine and text cosine to the query's vectors; NaN where either has none."""
        image = np.full(len(self.products), np.nan)
        if q_image is not None:
            np.fmax.at(image, self.image_owner, self.image_vectors @ q_image)
        text = self.text_vectors @ np.asarray(q_text, dtype=np.float32) if q_text is not None else image * np.nan
        return image, text

    def allowed(self, product: Product, path: str | None) -> np.ndarray:
        mask = np.array([path is None or p == path or p.startswith(path + "/") for p in self.paths])
        mask[self.index[product.pk]] = False
        return mask

    def top(self, scores: np.ndarray, k: int) -> list[int]:
        order = [i for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable") if not np.isnan(scores[i])]
        return [self.products[i].pk for i in order[:k]]


def _combined(image: np.ndarray, text: np.ndarray, weights: hybrid.HybridWeights, allowed: np.ndarray) -> np.ndarray:
    """The hybrid score of every allowed product, by hybrid's rules for missing signals (the floor being the weakest
    allowed product's, where the shop takes its candidate pool's); NaN for the rest."""
    signals = [(v, w) for v, w in ((image, weights.image), (text, weights.text)) if not np.isnan(v).all()]
    found = allowed & np.any([~np.isnan(v) for v, _ in signals], axis=0)
    score = np.zeros(len(image))
    for values, weight in signals:
        present = found & ~np.isnan(values)
        floor = float(values[present].min()) if present.any() else 0.0
        score += weight * np.where(np.isnan(values), floor, values)
    return np.where(found, score, np.nan)


def hybrid_recall(*, k: int = 10, limit: int | None = None,
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """recall@k of hybrid against exact scans, with and without a same-category filter: its text search (nearest
    products by title and description) and its whole ranking (the same weights applied to every product). Its
    image search is :func:`similar_recall` of the image space."""
    ranking = similar.similar_ranking(similar.HYBRID)
    if ranking.text is None:
        raise similar.NotIndexed("hybrid needs the text space's vectors")
    image, text = ranking.image, ranking.text
    weights = hybrid.hybrid_weights(image_space=image.space, text_space=text.space)
    exact = _Exhaustive(image, text)
    sample = _sample(exact.products, limit)
    recalls: dict[str, list[float]] = {}

    def add(name: str, got: list[int], expected: list[int]) -> None:
        if expected:
            recalls.setdefault(name, []).append(len(set(got) & set(expected)) / len(expected))

    for product in sample:
        q_text = exact.texts.get(product.pk)
        q_image = ImageEmbedding.objects.product_vector(product_id=product.pk, space=image.space,
                                                        version=image.version)  # fmt: skip
        image_scores, text_scores = exact.scores(q_image, q_text)
        for label, path in (("all", None), ("same category", product.category.path if product.category else None)):
            if label == "same category" and path is None:
                continue
            allowed, filters = exact.allowed(product, path), Filters(category_path=path) if path else None
            if q_text is not None:
                found = get_store().nearest_products(space=text.space, version=text.version, dimension=text.dimension,
                                                     vector=np.asarray(q_text), k=k + 1, filters=filters)  # fmt: skip
                add(f"recall@{k} text search ({label})", [pk for pk, _ in found if pk != product.pk][:k],
                    exact.top(np.where(allowed, text_scores, np.nan), k))  # fmt: skip
            served = similar.similar_products(product=product, k=k, ranking=ranking, filters=filters)
            add(f"recall@{k} hybrid ranking ({label})", [h.product_id for h in served],
                exact.top(_combined(image_scores, text_scores, weights, allowed), k))  # fmt: skip
        if progress:
            progress(1)
    return {name: float(np.mean(v)) for name, v in recalls.items()} | {
        "queries": len(sample), "image_space": image.space, "text_space": text.space,
        "weights": f"{image.space} {weights.image:.2f} + {text.space} {weights.text:.2f}",
    }  # fmt: skip


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
