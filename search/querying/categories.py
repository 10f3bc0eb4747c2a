"""The shop's category names as evidence for text search.

Product vectors hold a product's own words (title and description), not its category's name: with the name in
the vector, "similar products" by text would find the same category because the label is in both vectors, and
the evaluation would measure the label (see docs/relevance-text.md). A shopper's words still mean categories
("something to drink" is the *Beverages* aisle), so text search asks the category names directly: each text
space embeds the names with its own model (a few dozen short texts, cached per process until a name changes),
and when the query lands close enough to a category, that category's products, nearest first, become one more
ranked source for the fusion.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from catalog.models import Category
from search.embedders.base import Embedder
from search.vectorstores import Filters, get_store

MAX_CATEGORIES = 2  # categories a query may land in (a query for "tea mugs" may mean two aisles)


@dataclass(frozen=True)
class _Names:
    rows: tuple[tuple[str, str], ...]  # (path, name), the catalogue's categories
    vectors: np.ndarray  # one unit row per category


_cache: dict[str, _Names] = {}
_lock = threading.Lock()


def category_vectors(embedder: Embedder) -> _Names:
    """The categories' names embedded by ``embedder`` (per process; re-embedded when a name or path changes)."""
    rows = tuple(Category.objects.order_by("path").values_list("path", "name"))
    with _lock:
        cached = _cache.get(embedder.version)
        if cached is not None and cached.rows == rows:
            return cached
    vectors = np.asarray(embedder.embed_texts([name for _, name in rows]), dtype=np.float32) if rows else \
        np.zeros((0, embedder.dimension), dtype=np.float32)  # fmt: skip
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    names = _Names(rows=rows, vectors=vectors / np.where(norms > 0, norms, 1.0))
    with _lock:
        _cache[embedder.version] = names
    return names


def _within(path: str, chosen: str | None) -> str | None:
    """The narrower of a category and the shopper's category filter, or None when they do not overlap."""
    if not chosen or path == chosen or path.startswith(chosen + "/"):
        return path
    return chosen if chosen.startswith(path + "/") else None


def category_hits(
    *,
    embedder: Embedder,
    space: str,
    version: str,
    dimension: int,
    vector: np.ndarray,
    k: int,
    gate: float,
    filters: Filters | None = None,
) -> tuple[list[tuple[int, float]], float | None]:
    """Products of the categories whose names ``vector`` (a query embedded by ``embedder``) reaches ``gate``
    with, best category first, each category's products nearest to the query first; every hit scores its
    category's cosine. Also the best category cosine (None without categories), for staff and calibration."""
    names = category_vectors(embedder)
    if not names.rows:
        return [], None
    query = np.asarray(vector, dtype=np.float32)
    query = query / (np.linalg.norm(query) or 1.0)
    cosines = names.vectors @ query
    order = np.argsort(-cosines)
    best = float(cosines[order[0]])
    hits: list[tuple[int, float]] = []
    seen: set[int] = set()
    for index in order[:MAX_CATEGORIES]:
        score = float(cosines[index])
        path = _within(names.rows[index][0], filters.category_path if filters else None)
        if score < gate or path is None:
            continue
        within = replace(filters or Filters(), category_path=path)
        for pk, _distance in get_store().nearest_products(space=space, version=version, dimension=dimension,
                                                          vector=query, k=k, filters=within):  # fmt: skip
            if pk not in seen:
                seen.add(pk)
                hits.append((pk, score))
    return hits, best
