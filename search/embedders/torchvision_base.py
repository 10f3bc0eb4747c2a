"""Shared machinery for CNN image encoders (PyTorch modules, run eagerly or in ONNX Runtime).

Per image, in the decode threads: pad to a white square and resize, as uint8 (PIL releases the GIL).
Per batch, in one vectorised numpy pass: scale, normalise, lay out as NCHW float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps

from search.embedders.base import Embedder, l2_normalise, torch_device
from search.embedders.runtime import ModelSpec, stream_threads

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def configure_torch_threads() -> None:
    """Honour VITRINE_TORCH_THREADS (or the settings) so worker processes × streams × threads match the cores."""
    import torch

    torch.set_num_threads(stream_threads())


def square_pixels(image: Image.Image, side: int, resample: Image.Resampling) -> np.ndarray:
    """The image padded to a white square (product shots keep their edges) at ``side`` px: uint8 HWC."""
    square = ImageOps.pad(image.convert("RGB"), (side, side), method=resample, color=(255, 255, 255))
    return np.asarray(square, dtype=np.uint8)


def normalise_batch(batch: Sequence[np.ndarray], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) images → float32 (n, 3, H, W) of ``(x / 255 - mean) / std``, in one pass over the batch."""
    pixels = np.stack(batch).transpose(0, 3, 1, 2)
    scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1).astype(np.float32)
    offset = (mean / std).reshape(1, 3, 1, 1).astype(np.float32)
    out = np.empty(pixels.shape, dtype=np.float32)
    np.multiply(pixels, scale, out=out, casting="unsafe")
    out -= offset
    return out


def torch_module(forward: Callable[..., Any], **modules: Any) -> Any:
    """A ``torch.nn.Module`` whose forward is ``forward(*inputs)`` and which owns ``modules``, so their
    weights are exported with it and move with ``.to(device)``."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, module in modules.items():
                self.add_module(name, module)

        def forward(self, *inputs: Any) -> Any:
            return forward(*inputs)

    return Wrapped().eval()


def random_pixels(n: int, side: int, seed: int) -> np.ndarray:
    """Normalised-looking inputs for export checks."""
    return np.random.default_rng(seed).normal(size=(n, 3, side, side)).astype(np.float32)


class TorchImageEmbedder(Embedder):
    """Pads to a white square (product shots keep their edges), resizes, normalises, runs a CNN."""

    image_size: ClassVar[int] = 224
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mean = np.array(self.mean, dtype=np.float32)
        self._std = np.array(self.std, dtype=np.float32)
        self.model: Any = None

    def decode_sides(self) -> tuple[int, int]:
        return self.image_size, 0  # padded to a square: the longest side becomes image_size

    def preprocess(self, image: Image.Image) -> Any:
        return square_pixels(image, self.image_size, Image.Resampling.BILINEAR)

    def _features(self, batch: Any) -> Any:
        """Pooled features for a (n, 3, H, W) tensor."""
        raise NotImplementedError

    def _build(self) -> Any:
        """Return the model (weights loaded, classifier removed), and set version/dimension."""
        raise NotImplementedError

    def _identify(self) -> bool:
        """Set version and dimension from the weight file alone, without PyTorch, where that is possible.

        Then a process whose ONNX export is cached never builds the module (nor imports torch). False
        (the default): only building the model tells them.
        """
        return False

    def torch_model(self) -> Any:
        """The PyTorch model, built on first use: for eager runs, for exporting, and for the fallback."""
        if self.model is None:
            configure_torch_threads()
            self.model = self._build().to(self.device).eval()
        return self.model

    def _load(self) -> None:
        self.device = torch_device(self.device_preference)
        self.model = None  # a reload (SimCLR's newer checkpoint) builds afresh
        if not self._identify():
            self.torch_model()
        self._adopt_int8(self._runner(self.model_spec, part="image", quantize=self._wants_int8()))

    def model_spec(self) -> ModelSpec:
        side = self.image_size
        return ModelSpec(module=torch_module(self._features, model=self.torch_model()),
                         example={"pixel_values": random_pixels(2, side, seed=0)},
                         check={"pixel_values": random_pixels(3, side, seed=1)},
                         dynamic={"pixel_values": {0: "batch"}})  # fmt: skip

    def encode_batch(self, batch: list[Any]) -> np.ndarray:
        pixels = normalise_batch(batch, self._mean, self._std)
        return l2_normalise(self.runners["image"]({"pixel_values": pixels}))
