"""Retrieval metrics and the shapes of an evaluation's results (no database, no models)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

# Scores closer than this are a tie (float32 vectors, halfvec above 2000 dims).
TIE_EPSILON = 1e-6


def precision_at_k(relevant: Sequence[bool], k: int) -> float:
    """Hits in the first ``k`` over ``k``: fewer than ``k`` results count the missing ones as misses."""
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


def ranked_relevance(scored: Sequence[tuple[float, bool]]) -> list[bool]:
    """Relevance in rank order, ties broken pessimistically (misses first among equal scores).

    The store orders equal scores by id, and catalogue ids cluster by category (imports go
    folder by folder), so id order would reward a model that gives many images the same
    vector. Breaking ties against the model removes that luck.
    """
    ordered = sorted(scored, key=lambda item: -item[0])
    out: list[bool] = []
    start = 0
    while start < len(ordered):
        end = start + 1
        while end < len(ordered) and abs(ordered[end][0] - ordered[start][0]) <= TIE_EPSILON:
            end += 1
        group = [rel for _, rel in ordered[start:end]]
        out += sorted(group)  # False before True
        start = end
    return out


@dataclass
class Neighbour:
    product_id: int
    image_id: int | None
    score: float
    relevant: bool


@dataclass
class QueryOutcome:
    """One query: a product (leave-one-out) or a text, with what came back."""

    label: str  # product title or query text
    category: str
    product_id: int | None
    image_id: int | None
    n_relevant: int
    neighbours: list[Neighbour]
    precision: float
    recall: float
    average_precision: float


@dataclass
class Metrics:
    n_queries: int
    precision_at_k: float
    recall_at_k: float
    map_at_k: float

    def as_dict(self) -> dict[str, float | int]:
        return {"n_queries": self.n_queries, "precision_at_k": self.precision_at_k,
                "recall_at_k": self.recall_at_k, "map_at_k": self.map_at_k}  # fmt: skip


def mean_metrics(queries: Sequence[QueryOutcome]) -> Metrics:
    n = len(queries)
    if not n:
        return Metrics(0, 0.0, 0.0, 0.0)
    return Metrics(n_queries=n, precision_at_k=sum(q.precision for q in queries) / n,
                   recall_at_k=sum(q.recall for q in queries) / n,
                   map_at_k=sum(q.average_precision for q in queries) / n)  # fmt: skip


def per_category(queries: Sequence[QueryOutcome]) -> dict[str, Metrics]:
    """Each category's mean over its own queries, categories sorted by name."""
    groups: dict[str, list[QueryOutcome]] = defaultdict(list)
    for query in queries:
        groups[query.category].append(query)
    return {name: mean_metrics(groups[name]) for name in sorted(groups)}


def score_query(*, label: str, category: str, neighbours: list[Neighbour], k: int, n_relevant: int,
                product_id: int | None = None, image_id: int | None = None) -> QueryOutcome:  # fmt: skip
    """Metrics of one query from its neighbours (any order; ties count against the model)."""
    relevant = ranked_relevance([(n.score, n.relevant) for n in neighbours])[:k]
    relevant += [False] * (k - len(relevant))
    return QueryOutcome(label=label, category=category, product_id=product_id, image_id=image_id,
                        n_relevant=n_relevant, neighbours=sorted(neighbours, key=lambda n: -n.score)[:k],
                        precision=precision_at_k(relevant, k), recall=recall_at_k(relevant, k, n_relevant),
                        average_precision=average_precision_at_k(relevant, k, n_relevant))  # fmt: skip


@dataclass
class EvaluationResult:
    space: str
    version: str
    k: int
    mode: str  # "leave-one-out" or "text-queries"
    queries: list[QueryOutcome] = field(repr=False)
    skipped_queries: list[str] = field(default_factory=list)

    @property
    def overall(self) -> Metrics:
        return mean_metrics(self.queries)

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    @property
    def precision_at_k(self) -> float:
        return self.overall.precision_at_k

    @property
    def recall_at_k(self) -> float:
        return self.overall.recall_at_k

    @property
    def map_at_k(self) -> float:
        return self.overall.map_at_k

    @property
    def per_category(self) -> dict[str, Metrics]:
        return per_category(self.queries)

    def worst(self, n: int = 10) -> list[QueryOutcome]:
        return sorted(self.queries, key=lambda q: (q.average_precision, q.precision, q.label))[:n]

    def as_dict(self) -> dict[str, object]:
        overall = self.overall
        categories = {name: m.as_dict() for name, m in self.per_category.items()}
        out: dict[str, object] = {"space": self.space, "version": self.version, "k": self.k, "mode": self.mode,
                                  **overall.as_dict(), "per_category": categories}  # fmt: skip
        if self.skipped_queries:
            out["skipped_queries"] = self.skipped_queries
        return out
