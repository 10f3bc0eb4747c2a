"""The embedder contract. Nothing here imports torch: models load only in ``load()``.

An embedder turns images (and/or texts) into L2-normalised float32 vectors.
Work is split in two so bulk jobs can overlap them: ``preprocess`` (CPU,
per image, safe to run in a thread pool) and ``encode_batch`` (the model).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from search.embedders import runtime
from search.embedders.errors import SpaceUnavailable
from search.embedders.runtime import ModelSpec, Runner

__all__ = ["IMAGE", "TEXT", "Embedder", "SpaceUnavailable", "fingerprint_files", "l2_normalise", "torch_device"]

logger = logging.getLogger(__name__)

IMAGE = "image"
TEXT = "text"


def fingerprint_files(paths: Sequence[Path], *, head_bytes: int = 1 << 20) -> str:
    """A short, cheap identity for weight files: names, sizes and the first MiB of each."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(head_bytes))
    return digest.hexdigest()[:12]


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def torch_device(preference: str = "auto") -> str:
    """CUDA when available (or asked for), else CPU.

    On Linux without a GPU driver (NVIDIA, ROCm or WSL's) CUDA cannot be available, so the answer needs
    no torch import: a process that serves a cached ONNX export then never imports torch at all.
    """
    if preference != "auto":
        return preference
    if sys.platform == "linux" and not any(os.path.exists(path) for path in GPU_DRIVER_FILES):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """Base class. Subclasses set the class attributes and implement the hooks."""

    modalities: ClassVar[frozenset[str]] = frozenset({IMAGE})
    default_batch_size: ClassVar[int] = 32

    def __init__(self, key: str, options: Mapping[str, Any] | None = None) -> None:
        self.key = key
        self.options = dict(options or {})
        self.batch_size = int(self.options.get("BATCH_SIZE", self.default_batch_size))
        self.device_preference = str(self.options.get("DEVICE", os.environ.get("VITRINE_DEVICE", "auto")))
        # "torch" (eager) or "onnx" (ONNX Runtime, falling back to torch); see search.embedders.runtime.
        self.runtime = str(self.options.get("RUNTIME", "torch")).lower()
        # int8: "auto" follows `manage.py quantize`'s recorded decision, "always"/"never" override it.
        self.quantize = str(self.options.get("QUANTIZE", "auto")).lower()
        self.runners: dict[str, Runner] = {}
        self._lock = threading.Lock()
        self._loaded = False
        self.version = ""
        self.dimension = 0
        self.device = "cpu"

    # -- description (no model needed) ----------------------------------------------------
    @property
    def model_id(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`SpaceUnavailable` if the weights cannot be had. Cheap; imports no torch."""

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model once per process (thread-safe). Raises :class:`SpaceUnavailable`."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self.check()
            self._load()
            if not self.version or self.dimension <= 0:
                raise RuntimeError(f"{type(self).__name__} did not set version and dimension")
            self._loaded = True
            logger.info("loaded space %s: %s (%d-d) on %s, runtime %s", self.key, self.version, self.dimension,
                        self.device, self.runtime_label)  # fmt: skip

    def _load(self) -> None:
        raise NotImplementedError

    # -- runtime (torch or ONNX Runtime) ----------------------------------------------------
    def _wants_int8(self) -> bool:
        """Quantize the image tower? Only on ONNX, and only where ``manage.py quantize`` found quality holds."""
        if self.runtime != "onnx" or self.quantize in {"never", "false", "0", "no", "off"}:
            return False
        if self.quantize in {"always", "true", "1", "yes", "on"}:
            return True
        return runtime.quantization_accepted(space=self.key, version=self.version)

    def _runner(self, factory: Callable[[], ModelSpec], *, part: str, quantize: bool = False) -> Runner:
        """Build the runner for one part (``image`` or ``text``) of the fp32 model ``self.version`` names."""
        runner = runtime.runner_build(factory, name=f"{self.key}-{part}-{self.version}", runtime=self.runtime,
                                      device=self.device, quantize=quantize)  # fmt: skip
        self.runners[part] = runner
        return runner

    def _adopt_int8(self, runner: Runner) -> None:
        """int8 vectors are not fp32 vectors: a quantized tower makes a new version, never mixed with fp32."""
        if runner.backend == "onnx-int8" and not self.version.endswith(runtime.INT8_SUFFIX):
            self.version += runtime.INT8_SUFFIX

    @property
    def runtime_label(self) -> str:
        """Where the forward passes run, e.g. ``onnx`` or ``image: onnx-int8, text: onnx``."""
        labels = {part: runner.label for part, runner in self.runners.items()}
        if not labels:
            return "numpy"
        if len(set(labels.values())) == 1:
            return next(iter(labels.values()))
        return ", ".join(f"{part}: {label}" for part, label in labels.items())

    @property
    def streams(self) -> int:
        """Batches a bulk job may encode at once (``encode_batch`` is thread-safe): one per stream on the
        CPU (see ``runtime.inference_streams``), one on a GPU, which parallelises inside the batch."""
        return runtime.inference_streams() if self.device == "cpu" else 1

    @property
    def loaded(self) -> bool:
        return self._loaded

    # -- images ----------------------------------------------------------------------------
    def decode_sides(self) -> tuple[int, int]:
        """The fewest pixels ``preprocess`` needs on an image's (longest, shortest) side; 0 = no need.

        Bulk jobs decode JPEGs at the smallest DCT scale that keeps them (see ``catalog.imaging.open_rgb``).
        The default asks for 448 px on the short side: safe for any model that sees a few hundred pixels.
        """
        return 0, 448

    def preprocess(self, image: Image.Image) -> Any:
        """Per-image CPU work (resize, normalise). Runs in decode threads; must not touch the model."""
        raise NotImplementedError

    def encode_batch(self, batch: list[Any]) -> np.ndarray:
        """Model forward pass on preprocessed items: (n, dimension) float32, L2-normalised."""
        raise NotImplementedError

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.load()
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = [self.preprocess(image) for image in images[start : start + self.batch_size]]
            out.append(self.encode_batch(chunk))
        return np.concatenate(out) if out else np.zeros((0, self.dimension), dtype=np.float32)

    # -- texts -----------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise SpaceUnavailable(f"the {self.key} space does not embed text")
