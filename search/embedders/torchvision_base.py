"""Shared machinery for CNN image encoders run with PyTorch (imported only when loaded)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps

from search.embedders.base import Embedder, l2_normalise, torch_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def configure_torch_threads() -> None:
    """Honour VITRINE_TORCH_THREADS so worker processes × threads can match the cores."""
    import torch

    threads = os.environ.get("VITRINE_TORCH_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))


class TorchImageEmbedder(Embedder):
    """Pads to a white square (product shots keep their edges), resizes, normalises, runs a CNN."""

    image_size: ClassVar[int] = 224
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mean = np.array(self.mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.array(self.std, dtype=np.float32).reshape(3, 1, 1)
        self.model: Any = None

    def preprocess(self, image: Image.Image) -> Any:
        side = self.image_size
        square = ImageOps.pad(image.convert("RGB"), (side, side), method=Image.Resampling.BILINEAR,
                              color=(255, 255, 255))  # fmt: skip
        array = np.asarray(square, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (array - self._mean) / self._std

    def _features(self, batch: Any) -> Any:
        """Pooled features for a (n, 3, H, W) tensor."""
        raise NotImplementedError

    def _build(self) -> Any:
        """Return the model (weights loaded, classifier removed), and set version/dimension."""
        raise NotImplementedError

    def _load(self) -> None:

        configure_torch_threads()
        self.device = torch_device(self.device_preference)
        model = self._build()
        self.model = model.to(self.device).eval()

    def encode_batch(self, batch: list[Any]) -> np.ndarray:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(np.stack(batch))).to(self.device)
        with torch.inference_mode():
            features = self._features(tensor)
        return l2_normalise(features.float().cpu().numpy())
