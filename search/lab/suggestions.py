"""``evaluate --suggest``: how often the category suggestion (``search.assistants.suggest``) is right.

Leave-one-out over the catalogue: every categorised product with a picture vector asks for a suggestion as if it
had no category, its own vectors excluded from the neighbours. Picture vectors are the stored ones (the image space
"Looks similar" uses); text vectors are computed here from each product's **title and description only**, whatever
the stored text vectors hold, so the category's own name can never vote for itself. Neighbours are exact (a cosine
scan), which the store's HNSW search matches at these sizes.

Reported: top-1 and top-3 accuracy over all products, and, as the confidence threshold rises, the share of
products that still get a suggestion (coverage) and how often it is right then (accuracy). Also a small sweep of
the vote's settings (``K``, ``POWER``, image and text weights), the configured ones marked.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.template.loader import render_to_string

from catalog.models import Product
from search.assistants.suggest import options, vote
from search.embedders import SpaceUnavailable
from search.indexing.versions import space_load
from search.lab.report import bar_chart_svg
from search.models import ImageEmbedding
from search.querying import similar

THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class NothingToSuggest(Exception):
    pass


@dataclass
class SuggestResult:
    image_space: str
    text_space: str | None
    n: int
    top1: float
    top3: float
    curve: list[tuple[float, float, float | None]]  # (threshold, coverage, accuracy of the covered)
    options: dict[str, float]
    sweep: list[dict[str, float]] = field(default_factory=list)

    def lines(self) -> list[str]:
        text = self.text_space or "none"
        out = [f"category suggestions, leave-one-out over {self.n} products (pictures: {self.image_space}, "
               f"title+description: {text}; K={self.options['K']:g}, POWER={self.options['POWER']:g}, "
               f"weights image {self.options['IMAGE_WEIGHT']:g} / text {self.options['TEXT_WEIGHT']:g})",
               f"  top-1 accuracy {self.top1:.3f}, top-3 accuracy {self.top3:.3f}",
               f"  {'confidence >=':>14} {'coverage':>9} {'accuracy':>9}"]  # fmt: skip
        for threshold, coverage, accuracy in self.curve:
            acc = "—" if accuracy is None else f"{accuracy:.3f}"
            out.append(f"  {threshold:>14.2f} {coverage:>9.3f} {acc:>9}")
        if self.sweep:
            out.append(f"  sweep: {'K':>3} {'power':>5} {'img':>4} {'text':>4} {'top-1':>6} {'cov@acc>=.85':>12}")
            for row in self.sweep:
                mark = " <- configured" if row.get("configured") else ""
                settings = f"{row['K']:>3g} {row['POWER']:>5g} {row['IMAGE_WEIGHT']:>4g} {row['TEXT_WEIGHT']:>4g}"
                out.append(f"         {settings} {row['top1']:>6.3f} {row['coverage_at_085']:>12.3f}{mark}")
        return out

    def as_dict(self) -> dict[str, object]:
        return {"image_space": self.image_space, "text_space": self.text_space, "n": self.n, "top1": self.top1,
                "top3": self.top3, "options": self.options, "sweep": self.sweep,
                "curve": [{"threshold": t, "coverage": c, "accuracy": a} for t, c, a in self.curve]}  # fmt: skip


def _normalised(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _vectors() -> tuple[list[int], list[int], np.ndarray, np.ndarray | None, str, str | None]:
    """Product ids, their categories, picture vectors (primary picture first) and title+description vectors."""
    try:
        version = similar.image_space_version()
    except (similar.NotIndexed, SpaceUnavailable) as exc:
        raise NothingToSuggest(f"no image space has vectors to vote with: {exc}") from None
    rows = (ImageEmbedding.objects.ok(space=version.space, version=version.version)
            .filter(image__product__category__isnull=False)
            .order_by("image__product_id", "-image__is_primary", "image__position", "image_id")
            .values_list("image__product_id", "image__product__category_id", "vector"))  # fmt: skip
    ids, categories, vectors, seen = [], [], [], set()
    for pk, category_id, vector in rows.iterator():
        if pk not in seen:
            seen.add(pk)
            ids.append(pk)
            categories.append(category_id)
            vectors.append(np.asarray(vector, dtype=np.float32))
    if len(ids) < 3:
        raise NothingToSuggest("fewer than three categorised products have picture vectors")
    text_vectors, text_space = None, None
    text = similar.hybrid_text_version()
    if text is not None:
        try:
            embedder = space_load(text.space)
            products = Product.objects.in_bulk(ids)
            texts = ["\n".join(p for p in (products[pk].title, products[pk].description) if p) for pk in ids]
            text_vectors, text_space = (
                _normalised(np.asarray(embedder.embed_texts(texts), dtype=np.float32)),
                text.space,
            )
        except SpaceUnavailable:
            pass
    return ids, categories, _normalised(np.stack(vectors)), text_vectors, version.space, text_space


def _ranked(categories: list[int], image: np.ndarray, text: np.ndarray | None,
            opts: dict[str, float]) -> list[list[tuple[int, float]]]:  # fmt: skip
    """Per product: the vote's categories with their confidence, the product itself left out."""
    k = int(opts["K"])
    out = []
    cosines = [image @ image.T] + ([text @ text.T] if text is not None else [])
    for matrix in cosines:
        np.fill_diagonal(matrix, -np.inf)
    tops = [np.argsort(-matrix, axis=1)[:, :k] for matrix in cosines]
    for i in range(len(categories)):
        votes = [[(categories[j], float(m[i, j])) for j in top[i]] for m, top in zip(cosines, tops, strict=True)]
        ranked = vote(image=votes[0], text=votes[1] if len(votes) > 1 else [], opts=opts)
        out.append([(v.category_id, v.confidence) for v in ranked])
    return out


def _score(categories: list[int], ranked: list[list[tuple[int, float]]]) -> tuple[float, float, list]:
    n = len(categories)
    top1 = sum(1 for c, r in zip(categories, ranked, strict=True) if r and r[0][0] == c) / n
    top3 = sum(1 for c, r in zip(categories, ranked, strict=True) if c in [x for x, _ in r[:3]]) / n
    curve = []
    for threshold in THRESHOLDS:
        covered = [(c, r) for c, r in zip(categories, ranked, strict=True) if r and r[0][1] >= threshold]
        right = sum(1 for c, r in covered if r[0][0] == c)
        curve.append((threshold, len(covered) / n, right / len(covered) if covered else None))
    return top1, top3, curve


def _coverage_at(categories: list[int], ranked: list[list[tuple[int, float]]], accuracy: float) -> float:
    """The largest share of products suggested for at any confidence threshold where accuracy holds."""
    tops = sorted(((r[0][1], r[0][0] == c) for c, r in zip(categories, ranked, strict=True) if r), reverse=True)
    best, right = 0.0, 0
    for i, (_, ok) in enumerate(tops, start=1):
        right += int(ok)
        if right / i >= accuracy:
            best = i / len(categories)
    return best


def evaluate_suggestions(*, sweep: bool = True, log: Callable[[str], None] = lambda line: None) -> SuggestResult:
    ids, categories, image, text, image_space, text_space = _vectors()
    opts = options()
    log(f"suggest: {len(ids)} products")
    top1, top3, curve = _score(categories, _ranked(categories, image, text, opts))
    result = SuggestResult(image_space=image_space, text_space=text_space, n=len(ids), top1=top1, top3=top3,
                           curve=curve, options=opts)  # fmt: skip
    if sweep:
        weights = [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 2.0), (2.0, 1.0)] if text is not None else [(1.0, 0.0)]
        for k, power, (wi, wt) in itertools.product((5, 10, 20), (1.0, 4.0, 8.0), weights):
            trial = {**opts, "K": k, "POWER": power, "IMAGE_WEIGHT": wi, "TEXT_WEIGHT": wt}
            ranked = _ranked(categories, image, text, trial)
            row = {
                "K": k,
                "POWER": power,
                "IMAGE_WEIGHT": wi,
                "TEXT_WEIGHT": wt,
                "top1": _score(categories, ranked)[0],
                "coverage_at_085": _coverage_at(categories, ranked, 0.85),
            }
            row["configured"] = float(all(trial[key] == opts[key] for key in ("K", "POWER", "IMAGE_WEIGHT",
                                                                               "TEXT_WEIGHT")))  # fmt: skip
            result.sweep.append(row)
    return result


def report_write(*, directory: Path, result: SuggestResult) -> Path:
    """``directory/suggestions.html``: the accuracy/coverage table and charts, linked from the report's index."""
    directory.mkdir(parents=True, exist_ok=True)
    labels = [f"≥ {t:.1f}" for t, _, _ in result.curve]
    charts = [bar_chart_svg(title="coverage as the confidence threshold rises", labels=labels,
                            values=[c for _, c, _ in result.curve]),
              bar_chart_svg(title="accuracy of the suggestions made", labels=labels,
                            values=[a or 0.0 for _, _, a in result.curve])]  # fmt: skip
    html = render_to_string("search/suggestions_report.html", {"result": result, "charts": charts})
    page = directory / "suggestions.html"
    page.write_text(html, encoding="utf-8")
    return page
