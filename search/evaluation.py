"""Retrieval quality: leave-one-out over the catalogue with category as the label."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from catalog.models import Product
from search import embedders, selectors
from search.models import EmbeddingStatus, ImageEmbedding, SpaceVersion


def precision_at_k(relevant: Sequence[bool], k: int) -> float:
    return sum(relevant[:k]) / k


def recall_at_k(relevant: Sequence[bool], k: int, n_relevant: int) -> float:
    return sum(relevant[:k]) / n_relevant if n_relevant else 0.0


def average_precision_at_k(relevant: Sequence[bool], k: int, n_relevant: int) -> float:
    """AP@k = Σ_i P@i·rel_i / min(k, n_relevant)."""
    if not n_relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, rel in enumerate(relevant[:k], start=1):
        if rel:
            hits += 1
            total += hits / i
    return total / min(k, n_relevant)


@dataclass
class EvaluationResult:
    space: str
    version: str
    k: int
    n_queries: int
    precision_at_k: float
    recall_at_k: float
    map_at_k: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class NothingToEvaluate(Exception):
    pass


def evaluate_space(*, space: str, k: int = 5, progress: Callable[[int], None] | None = None,
                   version: str | None = None) -> EvaluationResult:  # fmt: skip
    """Each indexed, published, categorised product queries the index through ``similar_products``.

    Relevant = the other indexed products of its category. Queries with no such
    product are left out. ``version`` evaluates that model version instead of the active one
    (``manage.py quantize`` compares an int8 version, built beside fp32, before it is activated).
    """
    if embedders.IMAGE not in embedders.modalities(space):
        raise NothingToEvaluate(f"the {space} space embeds product text, not images; leave-one-out image "
                                "retrieval needs an image space (pixels, cnn, simclr or clip)")  # fmt: skip
    versions = SpaceVersion.objects.filter(space=space)
    found = (versions.filter(version=version) if version else versions.filter(state=SpaceVersion.State.ACTIVE)).first()
    if found is None:
        raise NothingToEvaluate(f"the {space} space has no active vectors; run `manage.py reindex --space {space}`")
    indexed_ids = set(
        ImageEmbedding.objects.filter(space=space, model_version=found.version, status=EmbeddingStatus.OK).values_list(
            "image__product_id", flat=True
        )
    )
    products = list(Product.objects.published().filter(pk__in=indexed_ids, category__isnull=False))
    labels = {p.pk: p.category_id for p in products}
    per_category = Counter(labels.values())
    precisions, recalls, aps = [], [], []
    for product in products:
        n_relevant = per_category[product.category_id] - 1
        if n_relevant <= 0:
            continue
        hits = selectors.similar_products(product=product, k=k, space=space, version=found)
        relevant = [labels.get(hit.product_id) == product.category_id for hit in hits]
        relevant += [False] * (k - len(relevant))
        precisions.append(precision_at_k(relevant, k))
        recalls.append(recall_at_k(relevant, k, n_relevant))
        aps.append(average_precision_at_k(relevant, k, n_relevant))
        if progress:
            progress(1)
    if not precisions:
        raise NothingToEvaluate(f"no product in {space} has another indexed product of its category")
    n = len(precisions)
    return EvaluationResult(space=space, version=found.version, k=k, n_queries=n,
                            precision_at_k=sum(precisions) / n, recall_at_k=sum(recalls) / n,
                            map_at_k=sum(aps) / n)  # fmt: skip
