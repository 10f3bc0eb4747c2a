"""The interface every vector store implements. Vectors are L2-normalised float32; distance is cosine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from search.embedders.errors import SpaceUnavailable


class StoreUnavailable(SpaceUnavailable):
    """The vector store cannot answer a search now (its server is down or restarting): a 503, never a 500.

    A kind of :class:`SpaceUnavailable`, so every page and API answer that handles an unusable space handles this
    too; raised by reads only, never by writes (a task that cannot write retries instead)."""


@dataclass(frozen=True)
class Filters:
    """Shopper filters applied inside the vector search (not after it), so k results still come back."""

    category_path: str | None = None  # the category and everything below it
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    in_stock: bool = False
    # A palette name (search.colours.COLOURS): the product's own colour field, or one of its pictures' dominant
    # colours (search.models.ImageColour).
    colour: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.category_path or self.price_min is not None or self.price_max is not None or self.in_stock
                    or self.colour)  # fmt: skip


@dataclass(frozen=True)
class ImageHit:
    image_id: int
    product_id: int
    distance: float  # cosine distance, 0 = identical direction

    @property
    def score(self) -> float:
        """Cosine similarity."""
        return 1.0 - self.distance


@dataclass(frozen=True)
class VersionRef:
    """One (space, model version) a search reads, with its dimension."""

    space: str
    version: str
    dimension: int


@dataclass(frozen=True)
class Candidate:
    """A product found near a query product by at least one signal, with its exact cosine in each.

    ``None`` means the product has no vector in that space (no embedded image, or no text vector yet), never 0.
    """

    product_id: int
    category_id: int | None
    image_id: int | None  # its image nearest to the query's
    image_score: float | None  # cosine of that image to the query product's image
    text_score: float | None  # cosine of its title+description vector to the query product's


@dataclass(frozen=True)
class CandidatePool:
    """What :meth:`VectorStore.similar_candidates` found: the union of both searches, each re-scored exactly.

    ``image_rows``/``text_rows``: how many rows each search returned; one that returned the whole ``pool`` may
    have had more to give. ``query_image``/``query_text``: whether the query product has a vector in that space.
    """

    candidates: list[Candidate]
    image_rows: int
    text_rows: int
    query_image: bool
    query_text: bool


class VectorStore:
    """Postgres is the source of truth: every store writes vectors to ``search_imageembedding`` /
    ``search_productembedding``; a store that serves searches from elsewhere (Milvus) also keeps a copy
    there, with the product fields that filters need, and says so with ``mirrors_catalog``."""

    mirrors_catalog: bool = False
    # Which store a measured search breadth (``manage.py tune_search``) belongs to: search.vectorstores.tuning.
    tuning_key: str = "pgvector"

    def ensure_version(self, *, space: str, version: str, dimension: int, products: bool = False) -> None:
        """Prepare storage and an index for a (space, model version) before vectors arrive.

        ``products=True`` for text spaces, whose vectors belong to products rather than images.
        """
        raise NotImplementedError

    def storage_name(self, *, space: str, version: str) -> str:
        """What this store calls a (space, version)'s index or collection (kept in ``SpaceVersion.index_name``,
        so switching store is noticed and the new store prepares its own)."""
        raise NotImplementedError

    def upsert_images(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
        """Store image vectors (idempotent: a second write replaces the first)."""
        raise NotImplementedError

    def upsert_products(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray, str]]) -> None:
        """Store text-space vectors as ``(product_id, vector, source_hash of the embedded text)`` (idempotent)."""
        raise NotImplementedError

    def products_sync(self, *, product_ids: Sequence[int]) -> None:
        """Bring the store's copy of these products' filter fields (price, stock, category, published,
        images, existence) up to date with Postgres. Nothing to do for stores that read them live."""

    def rebuild(self, *, space: str, version: str, dimension: int, products: bool = False) -> int:
        """Recreate a (space, version) from the vectors in Postgres; returns how many were loaded.
        Nothing to do for stores whose vectors *are* the Postgres rows."""
        return 0

    def nearest_images(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray | None = None, k: int,
        exclude_product_id: int | None = None, published_only: bool = True, filters: Filters | None = None,
        like_product_id: int | None = None,
    ) -> list[ImageHit]:  # fmt: skip
        """The ``k`` nearest stored images, best first, to ``vector`` or to ``like_product_id``'s own vector
        (its primary image's); :class:`LookupError` when that product has none."""
        raise NotImplementedError

    def nearest_products(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray, k: int, filters: Filters | None = None,
    ) -> list[tuple[int, float]]:  # fmt: skip
        """The ``k`` nearest products of a text space as (product_id, cosine distance), best first."""
        raise NotImplementedError

    def similar_candidates(
        self, *, product_id: int, image: VersionRef, text: VersionRef | None, pool: int,
        filters: Filters | None = None, published_only: bool = True,
    ) -> CandidatePool:  # fmt: skip
        """Products near ``product_id`` by look and by words: the ``pool`` nearest images (image space) and the
        ``pool`` nearest products (text space) to the product's own vectors, the product itself excluded and the
        filters applied inside both searches; their union, each with its exact cosine in both spaces.

        :class:`LookupError` when the product has a vector in neither space.
        """
        raise NotImplementedError

    def drop_version(self, *, space: str, version: str) -> None:
        """Remove a retired version's vectors and index."""
        raise NotImplementedError
