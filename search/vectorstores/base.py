"""The interface every vector store implements. Vectors are L2-normalised float32; distance is cosine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageHit:
    image_id: int
    product_id: int
    distance: float  # cosine distance, 0 = identical direction

    @property
    def score(self) -> float:
        """Cosine similarity."""
        return 1.0 - self.distance


class VectorStore:
    def ensure_version(self, *, space: str, version: str, dimension: int) -> None:
        """Prepare storage and an index for a (space, model version) before vectors arrive."""
        raise NotImplementedError

    def upsert_images(self, *, space: str, version: str, items: Sequence[tuple[int, np.ndarray]]) -> None:
        """Store image vectors (idempotent: a second write replaces the first)."""
        raise NotImplementedError

    def nearest_images(
        self, *, space: str, version: str, dimension: int, vector: np.ndarray, k: int,
        exclude_product_id: int | None = None, published_only: bool = True,
    ) -> list[ImageHit]:  # fmt: skip
        """The ``k`` nearest stored images, best first."""
        raise NotImplementedError

    def drop_version(self, *, space: str, version: str) -> None:
        """Remove a retired version's vectors and index."""
        raise NotImplementedError
