"""The raw-pixel baseline: 32×32 RGB, flattened, centred and L2-normalised (3,072-d).

Kept to show why learned embeddings win: it sees colour layout, not objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from search.embedders.base import Embedder, l2_normalise

SIDE = 32


class PixelsEmbedder(Embedder):
    default_batch_size = 256

    @property
    def model_id(self) -> str:
        return f"raw-pixels-{SIDE}x{SIDE}"

    def _load(self) -> None:
        self.version = f"pixels-{SIDE}x{SIDE}-v1"
        self.dimension = SIDE * SIDE * 3

    def decode_sides(self) -> tuple[int, int]:
        return 0, SIDE  # stretched to SIDE x SIDE: both sides must keep SIDE pixels

    def preprocess(self, image: Image.Image) -> Any:
        small = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0

    def encode_batch(self, batch: list[Any]) -> np.ndarray:
        vectors = np.stack(batch)
        # Centring per image removes overall brightness, so cosine compares the pattern.
        vectors = vectors - vectors.mean(axis=1, keepdims=True)
        flat = np.linalg.norm(vectors, axis=1) < 1e-6
        vectors[flat] = 1.0  # a uniform image has no pattern; give it a valid, shared direction
        return l2_normalise(vectors)
