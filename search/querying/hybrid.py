"""The hybrid "Looks similar": look and words together.

Candidates come from two searches around the viewed product's own vectors, the nearest images in the image space
and the nearest products in the text space (title + description); every candidate of their union is scored by a
weighted sum of its exact cosines in both (:meth:`VectorStore.similar_candidates`). The weights are chosen per
catalogue by ``evaluate --tune hybrid`` (``RankingWeights``); until then both count the same.

Missing signals are handled explicitly, never as a silent 0:

* the viewed product lacks one (no text vector yet, or no embedded image): that signal is left out for everyone
  and the ranking is the other one alone;
* a candidate lacks one the viewed product has (a product without images, or whose text is not embedded yet): it
  scores as the weakest candidate of the pool in that signal, so it is neither dropped nor favoured.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from search.models import RankingWeights
from search.querying.active import active_state
from search.vectorstores.base import CandidatePool

DEFAULT_IMAGE_WEIGHT = 0.5


@dataclass(frozen=True)
class HybridWeights:
    image: float
    text: float
    category: float = 0.0  # bonus for the viewed product's own category
    tuned: RankingWeights | None = None  # where image and text come from; None: the defaults

    @classmethod
    def for_text(cls, text: float, category: float = 0.0) -> HybridWeights:
        """Weights summing to one, ``text`` for words."""
        return cls(image=round(1.0 - text, 6), text=text, category=category)


def hybrid_weights(*, image_space: str, text_space: str) -> HybridWeights:
    """The newest weights tuned for these two spaces (cached per process), else the defaults."""
    category = float(settings.VITRINE_HYBRID_CATEGORY_PRIOR)
    for row in active_state().weights:
        if row.image_space == image_space and row.text_space == text_space:
            return HybridWeights(image=row.image_weight, text=row.text_weight, category=category, tuned=row)
    return HybridWeights(image=DEFAULT_IMAGE_WEIGHT, text=1.0 - DEFAULT_IMAGE_WEIGHT, category=category)


def pool_size(k: int) -> int:
    """How many neighbours each search fetches for ``k`` results: enough that the weighted top ``k`` of the
    union is, in practice, the weighted top ``k`` of the whole catalogue (``benchmark --search-quality --space
    hybrid``: at 100,000 products, recall@10 against every product scored was 0.98 with this pool, 0.83 with
    max(2k, 20))."""
    return max(4 * k, 40)


@dataclass(frozen=True)
class Scored:
    product_id: int
    image_id: int | None
    score: float


def hybrid_order(*, pool: CandidatePool, weights: HybridWeights, k: int,
                 category_id: int | None = None) -> list[Scored]:  # fmt: skip
    """The ``k`` best candidates, best first (ties by product id), by ``weights`` (see the module's docstring for
    missing signals)."""
    image_weight = weights.image if pool.query_image else 0.0
    text_weight = weights.text if pool.query_text else 0.0
    image_scores = [c.image_score for c in pool.candidates if c.image_score is not None]
    text_scores = [c.text_score for c in pool.candidates if c.text_score is not None]
    image_floor = min(image_scores, default=0.0)
    text_floor = min(text_scores, default=0.0)
    scored = []
    for c in pool.candidates:
        score = image_weight * (image_floor if c.image_score is None else c.image_score)
        score += text_weight * (text_floor if c.text_score is None else c.text_score)
        if weights.category and category_id is not None and c.category_id == category_id:
            score += weights.category
        scored.append(Scored(product_id=c.product_id, image_id=c.image_id, score=score))
    scored.sort(key=lambda s: (-s.score, s.product_id))
    return scored[:k]
