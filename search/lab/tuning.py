"""Choosing the hybrid ranking's weights for this catalogue (``evaluate --tune hybrid``).

Every categorised product asks for its neighbours once (the same candidate pool the shop's hybrid ranking fetches),
and each weight of a grid re-ranks that pool exactly as the shop would. Weights are then chosen by
cross-validation over *categories*: the categories are split into folds; for each fold the weight is tuned on the
products of the other categories and measured on that fold's products, so every query is measured with a weight
chosen without its category. Their mean is the precision recorded; the weight kept is the one that does best
over all categories. Relevance is the category, as in ``evaluate``; that is why no same-category bonus is tuned
(it would score itself).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import transaction

from catalog.models import Product
from search.lab.evaluation import NothingToEvaluate, evaluate_space, hybrid_ranking, indexed_product_ids
from search.lab.metrics import Neighbour, score_query
from search.models import RankingWeights
from search.querying.active import active_forget
from search.querying.hybrid import HybridWeights, hybrid_order, pool_size
from search.vectorstores import get_store
from search.vectorstores.base import VersionRef

GRID = tuple(round(i / 20, 2) for i in range(21))  # the text weight; the image weight is 1 minus it


@dataclass
class Fold:
    categories: list[str]
    text_weight: float  # chosen on the other categories
    train_precision: float
    test_precision: float
    queries: int
    held_out: list[float]  # p@k of this fold's queries, per grid weight


@dataclass
class Tuning:
    k: int
    grid: Sequence[float]
    queries: int
    pool: int
    image_space: str
    text_space: str
    overall: list[float]  # p@k over every query, per grid weight
    folds: list[Fold]
    cv_precision: float  # each query measured with the weight chosen without its category
    text_weight: float  # chosen over all categories
    single: dict[str, float] = field(default_factory=dict)  # p@k of each space alone, through its own search
    record: RankingWeights | None = None

    @property
    def best_single(self) -> tuple[str, float]:
        return max(self.single.items(), key=lambda item: (item[1], item[0]))

    @property
    def in_sample_precision(self) -> float:
        return self.overall[list(self.grid).index(self.text_weight)]

    def as_dict(self) -> dict[str, object]:
        return {"k": self.k, "queries": self.queries, "pool": self.pool, "image_space": self.image_space,
                "text_space": self.text_space, "grid": list(self.grid), "overall": self.overall,
                "folds": [vars(f) for f in self.folds], "cv_precision": self.cv_precision,
                "text_weight": self.text_weight, "image_weight": round(1 - self.text_weight, 6),
                "in_sample_precision": self.in_sample_precision, "single": self.single,
                "record_id": self.record.pk if self.record else None}  # fmt: skip


def _best(weights: Sequence[float], precision: Sequence[float]) -> int:
    """The index of the best weight; among equals, the most balanced one (nearest 0.5), then the smaller."""
    return max(range(len(weights)), key=lambda i: (round(precision[i], 9), -abs(weights[i] - 0.5), -weights[i]))


def category_folds(categories: Sequence[str], folds: int, seed: int = 0) -> list[list[str]]:
    """Categories dealt into ``folds`` groups after a seeded shuffle (the same split on every run)."""
    shuffled = sorted(categories)
    random.Random(seed).shuffle(shuffled)
    return [sorted(shuffled[i::folds]) for i in range(folds) if shuffled[i::folds]]


def hybrid_tune(*, k: int = 5, folds: int = 5, grid: Sequence[float] = GRID, record: bool = True,
                progress: Callable[[int], None] | None = None) -> Tuning:  # fmt: skip
    """Cross-validate the hybrid weights over categories, and record the choice (see the module's docstring)."""
    ranking = hybrid_ranking()
    image, text = ranking.image, ranking.text
    assert text is not None
    indexed = indexed_product_ids(image.space, image.version) | indexed_product_ids(text.space, text.version)
    products = list(Product.objects.published().filter(pk__in=indexed, category__isnull=False)
                    .select_related("category").order_by("pk"))  # fmt: skip
    labels = {p.pk: p.category_id for p in products}
    sizes = Counter(labels.values())
    store, fetch = get_store(), pool_size(k)
    image_ref = VersionRef(image.space, image.version, image.dimension)
    text_ref = VersionRef(text.space, text.version, text.dimension)
    rows: list[list[float]] = []  # per query, p@k per grid weight
    query_categories: list[str] = []
    for product in products:
        n_relevant = sizes[product.category_id] - 1
        if n_relevant <= 0:
            continue
        pool = store.similar_candidates(product_id=product.pk, image=image_ref, text=text_ref, pool=fetch)
        row = []
        for weight in grid:
            order = hybrid_order(pool=pool, weights=HybridWeights.for_text(weight), k=k,
                                 category_id=product.category_id)  # fmt: skip
            neighbours = [Neighbour(product_id=s.product_id, image_id=s.image_id, score=s.score,
                                    relevant=labels.get(s.product_id) == product.category_id)
                          for s in order]  # fmt: skip
            row.append(score_query(label=product.title, category="", neighbours=neighbours, k=k,
                                   n_relevant=n_relevant).precision)  # fmt: skip
        rows.append(row)
        query_categories.append(product.category.name if product.category else "")
        if progress:
            progress(1)
    if not rows:
        raise NothingToEvaluate("no product has another product of its category to be compared with")
    categories = sorted(set(query_categories))
    if len(categories) < 2:
        raise NothingToEvaluate("cross-validation over categories needs at least two categories")

    def mean(indices: list[int], column: int) -> float:
        return sum(rows[i][column] for i in indices) / len(indices)

    everyone = list(range(len(rows)))
    overall = [mean(everyone, j) for j in range(len(grid))]
    results: list[Fold] = []
    held_out_sum = 0.0
    for group in category_folds(categories, min(folds, len(categories))):
        test = [i for i in everyone if query_categories[i] in group]
        train = [i for i in everyone if query_categories[i] not in group]
        chosen = _best(grid, [mean(train, j) for j in range(len(grid))])
        results.append(Fold(categories=group, text_weight=grid[chosen], train_precision=mean(train, chosen),
                            test_precision=mean(test, chosen), queries=len(test),
                            held_out=[mean(test, j) for j in range(len(grid))]))  # fmt: skip
        held_out_sum += sum(rows[i][chosen] for i in test)
    tuning = Tuning(k=k, grid=grid, queries=len(rows), pool=fetch, image_space=image.space, text_space=text.space,
                    overall=overall, folds=results, cv_precision=held_out_sum / len(rows),
                    text_weight=grid[_best(grid, overall)])  # fmt: skip
    for space in (image.space, text.space):  # each space alone, through its own search path
        tuning.single[space] = evaluate_space(space=space, k=k).precision_at_k
    if record:
        best_space, best_precision = tuning.best_single
        with transaction.atomic():
            tuning.record = RankingWeights.objects.create(
                image_space=image.space, image_version=image.version, text_space=text.space,
                text_version=text.version, image_weight=round(1 - tuning.text_weight, 6),
                text_weight=tuning.text_weight, k=k, precision=tuning.cv_precision, best_single_space=best_space,
                best_single_precision=best_precision, folds=len(results), queries=len(rows), table=tuning.as_dict(),
            )  # fmt: skip
            active_forget()
            transaction.on_commit(active_forget)  # the weights hybrid uses from now on, in this process
    return tuning
