"""The HTML report of ``manage.py evaluate --report DIR``: one self-contained page staff can open offline.

Charts are inline SVG drawn here; every image the page shows is a small JPEG copied into
``DIR/images`` (referenced relatively), so the folder can be zipped or mailed as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from django.core.files.storage import default_storage
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe
from PIL import Image, UnidentifiedImageError

from catalog.models import Product, ProductImage
from search.lab.evaluation import Skipped, StartComparison
from search.lab.metrics import EvaluationResult, QueryOutcome

logger = logging.getLogger(__name__)

THUMBNAIL_PX = 128
PALETTE = ("#3b6ea5", "#d9822b", "#4c9a5a", "#b5475b", "#7a5ea8", "#8c6d46", "#3f9c9c", "#999999")
METRICS = (("precision_at_k", "precision@{k}"), ("recall_at_k", "recall@{k}"), ("map_at_k", "mAP@{k}"))


def bar_chart_svg(*, title: str, labels: Sequence[str], values: Sequence[float], maximum: float = 1.0) -> SafeString:
    """A horizontal bar chart (values in [0, maximum]) as inline SVG, with each value printed at its bar."""
    bar, gap, left, width = 22, 8, 150, 320
    height = 30 + len(labels) * (bar + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" width="{left + width + 70}" '
             f'height="{height}" viewBox="0 0 {left + width + 70} {height}"><title>{escape(title)}</title>',
             f'<text x="0" y="16" font-weight="bold">{escape(title)}</text>']  # fmt: skip
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 26 + i * (bar + gap)
        length = 0.0 if maximum <= 0 else max(0.0, min(1.0, value / maximum)) * width
        parts.append(f'<text x="{left - 6}" y="{y + bar * 0.7:.1f}" text-anchor="end">{escape(label)}</text>'
                     f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}" data-value="{value:.6f}"/>'
                     f'<text x="{left + length + 4:.1f}" y="{y + bar * 0.7:.1f}">{value:.3f}</text>')  # fmt: skip
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every piece of text above is escaped


class ImageCopier:
    """Copies images into ``DIR/images`` as small JPEGs, once each; returns the relative path or None."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "images"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._done: dict[int, str | None] = {}
        self._rows: dict[int, ProductImage] = {}

    def prefetch(self, image_ids: set[int]) -> None:
        missing = image_ids - set(self._rows)
        self._rows.update(ProductImage.objects.in_bulk(list(missing)))

    def __call__(self, image_id: int | None) -> str | None:
        if image_id is None:
            return None
        if image_id not in self._done:
            self._done[image_id] = self._copy(image_id)
        return self._done[image_id]

    def _copy(self, image_id: int) -> str | None:
        row = self._rows.get(image_id) or ProductImage.objects.filter(pk=image_id).first()
        if row is None:
            return None
        name = f"{image_id}.jpg"
        source = row.thumbnail or row.file
        try:
            with default_storage.open(str(source.name), "rb") as fh, Image.open(fh) as image:
                image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
                image.convert("RGB").save(self.directory / name, "JPEG", quality=85)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            logger.warning("report: image %s not copied: %s", image_id, exc)
            return None
        return f"images/{name}"


@dataclass
class Row:
    """A query and its neighbours, ready for the template."""

    label: str
    category: str
    image: str | None
    precision: float
    average_precision: float
    neighbours: list[dict[str, object]]


def _rows(queries: Sequence[QueryOutcome], copy: ImageCopier, titles: dict[int, str]) -> list[Row]:
    return [Row(label=q.label, category=q.category, image=copy(q.image_id), precision=q.precision,
                average_precision=q.average_precision,
                neighbours=[{"image": copy(n.image_id), "score": n.score, "relevant": n.relevant,
                             "title": titles.get(n.product_id, f"product {n.product_id}")} for n in q.neighbours])
            for q in queries]  # fmt: skip


def sample_queries(result: EvaluationResult, per_category: int = 1) -> list[QueryOutcome]:
    """The first query of each category: a spread across the catalogue, the same for every space."""
    seen: dict[str, int] = {}
    out = []
    for query in sorted(result.queries, key=lambda q: (q.category, q.product_id or 0, q.label)):
        if seen.get(query.category, 0) < per_category:
            out.append(query)
            seen[query.category] = seen.get(query.category, 0) + 1
    return out


def report_write(*, directory: Path, k: int, results: Sequence[EvaluationResult], skipped: Sequence[Skipped] = (),
                 text_results: Sequence[EvaluationResult] = (), comparisons: Sequence[StartComparison] = (),
                 worst: int = 10) -> Path:  # fmt: skip
    """Write ``directory/index.html`` (and its images); returns the page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    copy = ImageCopier(directory)
    every = [*results, *text_results]
    wanted = {q.image_id for r in every for q in r.queries if q.image_id}
    wanted |= {n.image_id for r in every for q in r.queries for n in q.neighbours if n.image_id}
    copy.prefetch({pk for pk in wanted if pk is not None})
    product_ids = {n.product_id for r in every for q in r.queries for n in q.neighbours}
    titles = dict(Product.objects.filter(pk__in=product_ids).values_list("pk", "title"))

    def charts(group: Sequence[EvaluationResult]) -> list[SafeString]:
        return [bar_chart_svg(title=label.format(k=k), labels=[r.space for r in group],
                              values=[float(getattr(r, attr)) for r in group]) for attr, label in METRICS]  # fmt: skip

    categories = sorted({name for r in results for name in r.per_category})
    category_table = [{"name": name, "cells": [r.per_category.get(name) for r in results]} for name in categories]
    sections = [{"result": r, "samples": _rows(sample_queries(r), copy, titles),
                 "worst": _rows(r.worst(worst), copy, titles)} for r in results]  # fmt: skip
    text_sections = [{"result": r, "queries": _rows(r.queries, copy, titles),
                      "worst": _rows(r.worst(worst), copy, titles)} for r in text_results]  # fmt: skip
    html = render_to_string("search/evaluation_report.html", {
        "k": k, "results": results, "skipped": skipped, "charts": charts(results) if results else [],
        "text_charts": charts(text_results) if text_results else [], "category_table": category_table,
        "sections": sections, "text_sections": text_sections,
        "sentences": [(c.improved, c.sentence(k)) for c in comparisons], "worst_n": worst,
    })  # fmt: skip
    page = directory / "index.html"
    page.write_text(html, encoding="utf-8")
    return page
