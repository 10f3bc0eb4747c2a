"""Retrieval quality with category as the label.

* Leave-one-out: each indexed, published, categorised product queries its space
  (image spaces through :func:`search.querying.similar.similar_products`, text spaces with the
  product's own title+description vector); relevant = the other indexed products of its
  category.
* Text queries (``query,category`` pairs): spaces that embed text (``clip``: text to image;
  ``text``: titles and descriptions) answer through :func:`search.querying.text.text_search`.

Metrics are averaged over queries (overall) and over each category's queries (per category).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from catalog.models import Category, Product, ProductImage
from search import embedders
from search.lab.metrics import (
    EvaluationResult,
    Neighbour,
    QueryOutcome,
    score_query,
)
from search.models import EmbeddingStatus, ImageEmbedding, ProductEmbedding, SpaceState, SpaceVersion
from search.querying import similar, text
from search.querying.hybrid import hybrid_weights
from search.vectorstores import get_store


class NothingToEvaluate(Exception):
    pass


def _unavailable_reason(space: str) -> str:
    """Why a space has no vectors: its model cannot load here (the reason), or it was never indexed."""
    try:
        embedders.load(space)
    except embedders.SpaceUnavailable as exc:
        return f"the {space} space is unavailable: {exc.reason}"
    state = SpaceState.objects.filter(key=space).first()
    if state is not None and not state.available and state.reason:
        return f"the {space} space is unavailable: {state.reason}"
    return f"the {space} space has no active vectors; run `manage.py reindex --space {space}`"


def _active(space: str) -> SpaceVersion:
    version = SpaceVersion.objects.filter(space=space, state=SpaceVersion.State.ACTIVE).first()
    if version is None:
        raise NothingToEvaluate(_unavailable_reason(space))
    return version


def _named_version(space: str, name: str) -> SpaceVersion:
    version = SpaceVersion.objects.filter(space=space, version=name).first()
    if version is None:
        raise NothingToEvaluate(f"the {space} space has no version {name!r}")
    return version


def indexed_product_ids(space: str, version: str) -> set[int]:
    """Products with a vector in this (space, version): of an image, or of their text."""
    if embedders.is_text_only(space):
        texts = ProductEmbedding.objects.filter(space=space, model_version=version, status=EmbeddingStatus.OK)
        return set(texts.values_list("product_id", flat=True))
    images = ImageEmbedding.objects.filter(space=space, model_version=version, status=EmbeddingStatus.OK)
    return set(images.values_list("image__product_id", flat=True))


def _query_images(product_ids: Iterable[int], space: str, version: str) -> dict[int, int]:
    """The image that stands for each product (as ``product_query_vector`` picks it)."""
    rows = (ImageEmbedding.objects.filter(image__product_id__in=list(product_ids), space=space,
                                          model_version=version, status=EmbeddingStatus.OK)
            .order_by("image__product_id", "-image__is_primary", "image__position", "image_id")
            .values_list("image__product_id", "image_id"))  # fmt: skip
    out: dict[int, int] = {}
    for product_id, image_id in rows:
        out.setdefault(product_id, image_id)
    return out


def _primary_images(product_ids: Iterable[int]) -> dict[int, int]:
    rows = (ProductImage.objects.filter(product_id__in=list(product_ids))
            .order_by("product_id", "-is_primary", "position", "id").values_list("product_id", "id"))  # fmt: skip
    out: dict[int, int] = {}
    for product_id, image_id in rows:
        out.setdefault(product_id, image_id)
    return out


def evaluate_space(*, space: str, k: int = 5, progress: Callable[[int], None] | None = None,
                   version_name: str | None = None) -> EvaluationResult:  # fmt: skip
    """Leave-one-out over the catalogue: every indexed product with another indexed product of its
    category is a query; relevant = those other products. Queries without one are left out.

    ``space`` may be ``hybrid`` (an image space and the text space together, with their tuned weights).
    ``version_name`` evaluates that model version instead of the active one (``manage.py quantize``
    compares an int8 version, built beside fp32, before it is activated).
    """
    text = space != similar.HYBRID and embedders.is_text_only(space)
    if space == similar.HYBRID:
        ranking = hybrid_ranking()
        label, image = ranking_label(ranking), ranking.image
        assert ranking.text is not None
        indexed_ids = indexed_product_ids(image.space, image.version)
        indexed_ids |= indexed_product_ids(ranking.text.space, ranking.text.version)
    else:
        version = _active(space) if version_name is None else _named_version(space, version_name)
        ranking = similar.Ranking(space=space, image=version)
        label, image = version.version, version
        indexed_ids = indexed_product_ids(space, version.version)
    products = list(Product.objects.published().filter(pk__in=indexed_ids, category__isnull=False)
                    .select_related("category").order_by("pk"))  # fmt: skip
    labels = {p.pk: p.category_id for p in products}
    sizes = Counter(labels.values())
    images = _primary_images(labels) if text else _query_images(labels, image.space, image.version)
    queries: list[QueryOutcome] = []
    for product in products:
        n_relevant = sizes[product.category_id] - 1
        if n_relevant <= 0:
            continue
        if text:
            neighbours = _text_neighbours(product=product, space=space, version=image, k=k, labels=labels,
                                          images=images)  # fmt: skip
        else:
            hits = similar.similar_products(product=product, k=k, ranking=ranking)
            neighbours = [Neighbour(product_id=h.product_id, image_id=h.image_id or images.get(h.product_id),
                                    score=h.score, relevant=labels.get(h.product_id) == product.category_id)
                          for h in hits]  # fmt: skip
        category = product.category.name if product.category else ""
        queries.append(score_query(label=product.title, category=category, neighbours=neighbours,
                                   k=k, n_relevant=n_relevant, product_id=product.pk,
                                   image_id=images.get(product.pk)))  # fmt: skip
        if progress:
            progress(1)
    if not queries:
        raise NothingToEvaluate(f"no product in {space} has another indexed product of its category")
    return EvaluationResult(space=space, version=label, k=k, mode="leave-one-out", queries=queries)


def hybrid_ranking() -> similar.Ranking:
    """The hybrid ranking shoppers get, or :class:`NothingToEvaluate` with the reason it cannot run here."""
    try:
        ranking = similar.similar_ranking(similar.HYBRID)
    except similar.NotIndexed as exc:
        raise NothingToEvaluate(f"hybrid needs an image space with vectors: {exc}") from None
    if ranking.text is None:
        spaces = embedders.text_spaces()
        reason = _unavailable_reason(spaces[0]) if spaces else "no text space is enabled (VITRINE_ENABLED_SPACES)"
        raise NothingToEvaluate(f"hybrid needs a text space with vectors: {reason}")
    return ranking


def ranking_label(ranking: similar.Ranking) -> str:
    """What a hybrid result says it measured: both spaces and the weights (tuned, or the defaults)."""
    assert ranking.text is not None
    weights = hybrid_weights(image_space=ranking.image.space, text_space=ranking.text.space)
    origin = f"tuned {weights.tuned.tuned_at:%Y-%m-%d}" if weights.tuned else "default weights, not tuned"
    return (f"{ranking.image.space} {weights.image:.2f} + {ranking.text.space} {weights.text:.2f} "
            f"({origin})")  # fmt: skip


def _text_neighbours(*, product: Product, space: str, version: SpaceVersion, k: int, labels: dict[int, int | None],
                     images: dict[int, int]) -> list[Neighbour]:  # fmt: skip
    """A text space's nearest products to this product's own title+description vector, itself left out."""
    own = (ProductEmbedding.objects.filter(product=product, space=space, model_version=version.version,
                                           status=EmbeddingStatus.OK)
           .values_list("vector", flat=True).first())  # fmt: skip
    if own is None:
        return []
    found = get_store().nearest_products(space=space, version=version.version, dimension=version.dimension,
                                         vector=own, k=k + 1)  # fmt: skip
    return [Neighbour(product_id=pk, image_id=images.get(pk), score=1.0 - distance,
                      relevant=labels.get(pk) == product.category_id)
            for pk, distance in found if pk != product.pk][:k]  # fmt: skip


# --- text queries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextQuery:
    query: str
    category: str


class BadQueryFile(ValueError):
    pass


def text_queries_read(path: Path) -> list[TextQuery]:
    """``query,category`` rows from a CSV file with a header; blank rows are ignored."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"query", "category"} - set(reader.fieldnames or [])
            if missing:
                raise BadQueryFile(f"{path} lacks the column(s) {', '.join(sorted(missing))} (needs query,category)")
            rows = [TextQuery(query=(row["query"] or "").strip(), category=(row["category"] or "").strip())
                    for row in reader]  # fmt: skip
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadQueryFile(f"cannot read {path}: {exc}") from None
    rows = [row for row in rows if row.query]
    if not rows:
        raise BadQueryFile(f"{path} has no queries")
    return rows


def text_spaces_for_queries() -> list[str]:
    """Enabled spaces that can embed a text query: CLIP (into its image space) and text spaces."""
    return [key for key in embedders.enabled() if embedders.TEXT in embedders.modalities(key)]


def _find_category(name: str) -> Category | None:
    return (Category.objects.filter(name__iexact=name).first()
            or Category.objects.filter(path__iexact=name.strip("/")).first())  # fmt: skip


def evaluate_text_queries(*, space: str, queries: Sequence[TextQuery], k: int = 5) -> EvaluationResult:
    """Text-to-product search in one space; relevant = indexed products of the query's category (or below it)."""
    if embedders.TEXT not in embedders.modalities(space):
        raise NothingToEvaluate(f"the {space} space does not take text queries")
    version = _active(space)
    try:
        embedders.load(space)
    except embedders.SpaceUnavailable as exc:
        raise NothingToEvaluate(f"the {space} space is unavailable: {exc.reason}") from None
    indexed_ids = indexed_product_ids(space, version.version)
    products = Product.objects.published().filter(pk__in=indexed_ids, category__isnull=False)
    category_of = dict(products.values_list("pk", "category__path"))
    images = _query_images(category_of, space, version.version) if not embedders.is_text_only(space) else {}
    images = images or _primary_images(category_of)
    outcomes: list[QueryOutcome] = []
    skipped: list[str] = []
    for item in queries:
        category = _find_category(item.category)
        if category is None:
            skipped.append(f"{item.query!r}: no category named {item.category!r}")
            continue
        prefix = category.path + "/"
        members = {pk for pk, path in category_of.items() if path == category.path or path.startswith(prefix)}
        if not members:
            skipped.append(f"{item.query!r}: no indexed product in {category.name}")
            continue
        found = text.text_search(query=item.query, k=k, space=space)
        neighbours = [Neighbour(product_id=h.product_id, image_id=images.get(h.product_id), score=h.score,
                                relevant=h.product_id in members) for h in found.hits]  # fmt: skip
        outcomes.append(score_query(label=item.query, category=category.name, neighbours=neighbours, k=k,
                                    n_relevant=len(members)))  # fmt: skip
    if not outcomes:
        raise NothingToEvaluate(f"none of the queries could be evaluated in {space}: {'; '.join(skipped[:5])}")
    return EvaluationResult(space=space, version=version.version, k=k, mode="text-queries", queries=outcomes,
                            skipped_queries=skipped)  # fmt: skip


# --- comparing spaces ------------------------------------------------------------------------------


@dataclass
class Skipped:
    space: str
    reason: str


def evaluate_all(
    *, k: int = 5, spaces: Sequence[str] | None = None, progress: Callable[[int], None] | None = None
) -> tuple[list[EvaluationResult], list[Skipped]]:
    """Leave-one-out in every enabled space and hybrid (or ``spaces``); those that cannot answer are skipped
    with why."""
    results: list[EvaluationResult] = []
    skipped: list[Skipped] = []
    for space in spaces or [*embedders.enabled(), similar.HYBRID]:
        try:
            results.append(evaluate_space(space=space, k=k, progress=progress))
        except NothingToEvaluate as exc:
            skipped.append(Skipped(space=space, reason=str(exc)))
    return results, skipped


@dataclass
class StartComparison:
    """A fine-tuned space against the model it started from, evaluated the same way."""

    space: str
    start_space: str
    start_label: str
    metric: str
    value: float
    start_value: float

    @property
    def delta(self) -> float:
        return self.value - self.start_value

    @property
    def improved(self) -> bool:
        return self.delta > 0

    def sentence(self, k: int) -> str:
        verdict = "better than" if self.delta > 0 else ("no better than" if self.delta == 0 else "worse than")
        return (f"{self.space} p@{k} {self.value:.3f} vs its start ({self.start_space}, {self.start_label}) "
                f"{self.start_value:.3f}: {self.delta:+.3f} ({verdict} its start)")  # fmt: skip

    def as_dict(self) -> dict[str, object]:
        return {"space": self.space, "start_space": self.start_space, "start": self.start_label,
                "metric": self.metric, "value": self.value, "start_value": self.start_value, "delta": self.delta,
                "improved": self.improved}  # fmt: skip


def start_of(result: EvaluationResult) -> tuple[str, str] | None:
    """(space, label) of the stock model a fine-tuned space's active version started from, if it is indexed here."""
    from search.embedders.simclr import fine_tuned_base

    base = fine_tuned_base(result.version)
    if base is None:
        return None
    cnn = str(getattr(settings, "VITRINE_FALLBACK_IMAGE_SPACE", "cnn"))
    for space in ("cnn", cnn):
        active = SpaceVersion.objects.filter(space=space, state=SpaceVersion.State.ACTIVE).first()
        if active is not None and active.version.startswith(f"{base}-"):
            return space, f"{base}, ImageNet"
    return None


def compare_with_start(result: EvaluationResult, others: Sequence[EvaluationResult] = ()) -> StartComparison | None:
    """p@k of a fine-tuned space against its start; the start is evaluated here unless ``others`` has it."""
    start = start_of(result)
    if start is None:
        return None
    space, label = start
    baseline = next((r for r in others if r.space == space and r.k == result.k and r.mode == result.mode), None)
    if baseline is None:
        try:
            baseline = evaluate_space(space=space, k=result.k)
        except NothingToEvaluate:
            return None
    return StartComparison(space=result.space, start_space=space, start_label=label, metric=f"precision@{result.k}",
                           value=result.precision_at_k, start_value=baseline.precision_at_k)  # fmt: skip
