"""Tokenising text without PyTorch: a model's fast tokenizer, saved once and replayed with ``tokenizers``.

sentence-transformers tokenises through transformers, and importing either imports torch (about 2 s and
500 MB per process here). When a text model runs in ONNX Runtime nothing else needs torch, so the first
process that loads the model saves its tokenizer (vocabulary, normalisation, special tokens) with the
truncation and padding the model's own preprocessing applies, and later processes tokenise from that file.

The file is kept only if it reproduces sentence-transformers' tokens exactly on :data:`PROBES` (empty,
short, long past the model's limit, accents, emoji, full-width letters, control characters; in one batch
and alone); a model whose tokenisation it cannot reproduce keeps loading sentence-transformers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = "v1"
NAMES = ("input_ids", "attention_mask", "token_type_ids")
PROBES = [
    "",
    "mug",
    "A red summer dress",
    "stainless steel chef's knife with a wooden handle, dishwasher safe, 20 cm blade " * 30,
    "Gitarre aus Holz – Größe M, für Kinder 🎸",
    "ＦＵＬＬ width ＴＥＸＴ and   spaces\tand\nnew lines",
    "l'été à Paris: «robe» d'été",
]


@dataclass
class SavedTokenizer:
    """A ``tokenizers.Tokenizer`` with its truncation and padding set, and the input names the model takes."""

    tokenizer: Any
    names: list[str]
    extra: dict[str, Any]

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: arrays[name] for name in self.names}


def _paths(folder: Path, name: str) -> tuple[Path, Path]:
    stem = f"{name}-tokenizer-{FORMAT}"
    return folder / f"{stem}.json", folder / f"{stem}.meta.json"


def load(folder: Path, name: str) -> SavedTokenizer | None:
    """The saved tokenizer for ``name`` (space and model version), or None when there is none."""
    path, meta_path = _paths(folder, name)
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        from tokenizers import Tokenizer

        meta = json.loads(meta_path.read_text())
        return SavedTokenizer(Tokenizer.from_file(str(path)), names=list(meta["names"]), extra=dict(meta["extra"]))
    except Exception as exc:  # a damaged file: the model's own loader still works
        logger.warning("saved tokenizer %s unusable (%s); loading the model's own", path.name, exc)
        return None


def save(hf_tokenizer: Any, reference: Callable[[list[str]], dict[str, np.ndarray]], *, folder: Path, name: str,
         extra: dict[str, Any] | None = None) -> SavedTokenizer | None:  # fmt: skip
    """Save ``hf_tokenizer`` (a transformers fast tokenizer) for torch-free use, if it reproduces ``reference``
    (the model's own tokenisation, numpy arrays) exactly. ``extra``: other preprocessing facts to keep."""
    try:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        wanted = reference(PROBES)
        names = [key for key in NAMES if key in wanted]
        # The long probe is past every model's limit, so the batch is as wide as the truncation length.
        backend.enable_truncation(max_length=int(wanted["input_ids"].shape[1]),
                                  direction=str(getattr(hf_tokenizer, "truncation_side", "right")))  # fmt: skip
        backend.enable_padding(direction=str(hf_tokenizer.padding_side), pad_id=int(hf_tokenizer.pad_token_id),
                               pad_type_id=int(getattr(hf_tokenizer, "pad_token_type_id", 0) or 0),
                               pad_token=str(hf_tokenizer.pad_token))  # fmt: skip
        saved = SavedTokenizer(backend, names=names, extra=dict(extra or {}))
        for batch in (PROBES, PROBES[1:3], [PROBES[4]]):
            expected = wanted if batch is PROBES else reference(batch)
            got = saved(batch)
            if any(not np.array_equal(got[key], np.asarray(expected[key])) for key in names):
                logger.info("%s: the tokenizers library does not reproduce the model's tokens; keeping its own", name)
                return None
    except Exception as exc:
        logger.info("%s: tokenizer not saved for torch-free use: %s: %s", name, type(exc).__name__, str(exc)[:200])
        return None
    path, meta_path = _paths(folder, name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{path.name}.{os.getpid()}"
        partial.write_text(backend.to_str())
        meta_path.write_text(json.dumps({"names": names, "extra": saved.extra}, indent=2))
        partial.replace(path)  # last: a reader that sees the tokenizer also sees its meta
    except OSError as exc:  # a read-only or broken cache: this process tokenises with the model all the same
        logger.warning("%s: could not save the tokenizer in %s: %s", name, folder, exc)
        return None
    return saved
