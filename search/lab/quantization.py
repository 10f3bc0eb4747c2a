"""Should a space's image encoder run in int8? Decided on the shop's own catalogue, then recorded.

:func:`space_quantize` builds the int8 version beside the fp32 one (same images, same decode pipeline),
measures ``evaluate``'s precision@k on both, and accepts int8 only if it loses at most ``max_drop``.
The decision goes to ``$VITRINE_HOME/models/onnx/quantization.json``, which every process reads when it
loads the space (``QUANTIZE="auto"``). Accepted: the int8 version (``<fp32 version>-int8``) becomes the
active one, so int8 and fp32 vectors are never compared with each other. Rejected: its vectors are deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.utils import timezone

from search import embedders
from search.embedders import Embedder, SpaceUnavailable, runtime
from search.indexing import bulk, versions
from search.lab.evaluation import evaluate_space
from search.models import SpaceVersion
from search.vectorstores import get_store

logger = logging.getLogger(__name__)


@dataclass
class QuantizationDecision:
    space: str
    accepted: bool
    fp32_version: str
    int8_version: str
    k: int
    precision_fp32: float
    precision_int8: float
    max_drop: float
    n_queries: int
    fp32_img_per_s: float
    int8_img_per_s: float
    decided_at: str

    @property
    def drop(self) -> float:
        return self.precision_fp32 - self.precision_int8

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"drop": self.drop}


def _variant(space: str, quantize: str) -> Embedder:
    """A private instance of the space's embedder with QUANTIZE forced (the process-wide one is left alone)."""
    configured = embedders.get(space)
    if configured.runtime != "onnx":
        raise SpaceUnavailable(f"int8 needs the ONNX runtime; the {space} space runs {configured.runtime!r} "
                               "(set its RUNTIME option, or VITRINE_RUNTIME, to 'onnx')")  # fmt: skip
    return embedders.variant(space, QUANTIZE=quantize)


def space_quantize(*, space: str, max_drop: float = 0.01, k: int = 5,
                   progress: Callable[[int], None] | None = None) -> QuantizationDecision:  # fmt: skip
    """Measure int8 against fp32 on this catalogue and record whether ``space`` may use int8.

    Raises :class:`SpaceUnavailable` (no ONNX, a text-only space, int8 unavailable) or
    :class:`search.evaluation.NothingToEvaluate` (too few categorised, indexed products).
    """
    if embedders.IMAGE not in embedders.modalities(space):
        raise SpaceUnavailable(f"the {space} space embeds text; precision@{k} is measured on images, so its "
                               "int8 quality cannot be checked here")  # fmt: skip
    fp32 = _variant(space, "never")
    int8 = _variant(space, "always")
    if int8.version == fp32.version:
        image = int8.runners.get("image")
        why = (image.details.get("int8_refused") if image else None) or int8.runtime_label
        raise SpaceUnavailable(f"int8 is not available for {space}: {why}")
    rates = {}
    for embedder in (fp32, int8):
        started = time.perf_counter()
        # fp32 first and activated as usual (it is what the space serves until now); int8 stays building.
        result = bulk.images_embed_bulk(space=space, embedder=embedder, missing_only=True, progress=progress,
                                            activate=embedder is fp32)  # fmt: skip
        rates[embedder.version] = result.processed / max(time.perf_counter() - started, 1e-9)
    quality_fp32 = evaluate_space(space=space, k=k, version_name=fp32.version)
    quality_int8 = evaluate_space(space=space, k=k, version_name=int8.version)
    decision = QuantizationDecision(
        space=space, accepted=quality_fp32.precision_at_k - quality_int8.precision_at_k <= max_drop,
        fp32_version=fp32.version, int8_version=int8.version, k=k, precision_fp32=quality_fp32.precision_at_k,
        precision_int8=quality_int8.precision_at_k, max_drop=max_drop, n_queries=quality_int8.n_queries,
        fp32_img_per_s=rates[fp32.version], int8_img_per_s=rates[int8.version],
        decided_at=timezone.now().isoformat(),
    )  # fmt: skip
    runtime.quantization_record(space=space, decision=decision.as_dict())
    if decision.accepted:
        versions.version_activate_if_complete(space=space)
    else:
        _discard(space=space, version=int8.version)
    # This process's configured instance loads again and picks the decision up.
    embedders.reset()
    logger.info("space %s: int8 %s (precision@%d %.4f vs fp32 %.4f)", space,
                "accepted" if decision.accepted else "rejected", k, decision.precision_int8,
                decision.precision_fp32)  # fmt: skip
    return decision


def _discard(*, space: str, version: str) -> None:
    """Forget a trial version: its vectors, its index and its row."""
    row = SpaceVersion.objects.filter(space=space, version=version).first()
    if row is None or row.state == SpaceVersion.State.ACTIVE:
        return
    get_store().drop_version(space=space, version=version)
    row.delete()
