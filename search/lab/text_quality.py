"""How well shoppers' text search answers, measured through the search they use (all sources fused):

* positive queries (``query,category``): precision@k with category as the label, as ``evaluation`` does per space;
* colour queries (``query,colour,category``): a hit needs the product's colour field AND its category to match;
* negative queries (``query``: things the shop does not sell): the share answered with nothing or with an
  explicit "no close match";
* the multilingual table: the same positive queries translated (``queries.de.csv``…), in the ``text`` space
  alone and through the shopper's search;
* calibration: each source's best score on positive and negative queries, which is what its gate is chosen from.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from catalog.models import Product
from search import embedders
from search.colours import query_colours
from search.lab.evaluation import BadQueryFile, NothingToEvaluate, TextQuery, _find_category, text_queries_read
from search.lab.metrics import EvaluationResult, Neighbour, QueryOutcome, score_query
from search.querying import text
from search.querying.similar import NotIndexed, active_version
from search.vectorstores import get_store

T = TypeVar("T")
SHOPPER_SEARCH = "search"  # how results of the fused shopper search are labelled (not a space)


@dataclass(frozen=True)
class ColourQuery:
    query: str
    colour: str
    category: str


def _rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = set(columns) - set(reader.fieldnames or [])
            if missing:
                raise BadQueryFile(f"{path} lacks the column(s) {', '.join(sorted(missing))} "
                                   f"(needs {','.join(columns)})")  # fmt: skip
            rows = [{c: (row[c] or "").strip() for c in columns} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadQueryFile(f"cannot read {path}: {exc}") from None
    rows = [row for row in rows if row[columns[0]]]
    if not rows:
        raise BadQueryFile(f"{path} has no queries")
    return rows


def colour_queries_read(path: Path) -> list[ColourQuery]:
    """``query,colour,category`` rows, e.g. ``red fruit,red,Fruit & Vegetables``."""
    return [ColourQuery(**row) for row in _rows(path, ["query", "colour", "category"])]


def negative_queries_read(path: Path) -> list[str]:
    """``query`` rows: things the catalogue does not sell."""
    return [row["query"] for row in _rows(path, ["query"])]


def _members(category_name: str, *, colour: str | None = None) -> tuple[str, set[int]] | None:
    category = _find_category(category_name)
    if category is None:
        return None
    products = Product.objects.published().in_category(category)
    if colour is not None:
        products = products.filter(color__iexact=colour)
    return category.name, set(products.values_list("pk", flat=True))


def _outcome(label: str, category: str, found: text.SearchOutcome, members: set[int], k: int) -> QueryOutcome:
    # Scores by rank: the shopper's order is what counts (colour matches are moved up after fusion).
    neighbours = [Neighbour(product_id=h.product_id, image_id=None, score=-float(rank),
                            relevant=h.product_id in members) for rank, h in enumerate(found.hits[:k])]  # fmt: skip
    return score_query(label=label, category=category, neighbours=neighbours, k=k, n_relevant=len(members))


def shopper_text_queries(*, queries: Sequence[TextQuery], k: int = 5, space: str | None = None) -> EvaluationResult:
    """Positive queries through the shopper's search (``space=None``: every source fused, gates applied)."""
    outcomes: list[QueryOutcome] = []
    skipped: list[str] = []
    for item in queries:
        found = _members(item.category)
        if found is None or not found[1]:
            skipped.append(f"{item.query!r}: no products in {item.category!r}")
            continue
        name, members = found
        outcomes.append(_outcome(item.query, name, text.text_search(query=item.query, k=k, space=space), members, k))
    if not outcomes:
        raise NothingToEvaluate(f"none of the queries could be evaluated: {'; '.join(skipped[:5])}")
    return EvaluationResult(space=space or SHOPPER_SEARCH, version="", k=k, mode="text-queries", queries=outcomes,
                            skipped_queries=skipped)  # fmt: skip


def colour_query_precision(*, queries: Sequence[ColourQuery], k: int = 5) -> EvaluationResult:
    """ "<colour> <thing>" queries: precision@k where a hit has the query's colour (the product's own field)
    and category. Pairs with fewer than k such products are skipped (precision@k could not reach 1)."""
    outcomes: list[QueryOutcome] = []
    skipped: list[str] = []
    for item in queries:
        found = _members(item.category, colour=item.colour)
        if found is None or len(found[1]) < k:
            skipped.append(f"{item.query!r}: fewer than {k} {item.colour} products in {item.category!r}")
            continue
        name, members = found
        result = text.text_search(query=item.query, k=k)
        outcomes.append(_outcome(item.query, f"{item.colour} · {name}", result, members, k))
    if not outcomes:
        raise NothingToEvaluate("none of the colour queries could be evaluated")
    return EvaluationResult(space=SHOPPER_SEARCH, version="", k=k, mode="colour-queries", queries=outcomes,
                            skipped_queries=skipped)  # fmt: skip


@dataclass
class NegativeResult:
    """How the shopper's search answers queries for things the shop does not sell."""

    n_queries: int
    empty: list[str] = field(default_factory=list)  # answered with nothing
    no_close_match: list[str] = field(default_factory=list)  # answered "no close match" (with nothing shown)
    answered: list[tuple[str, str]] = field(default_factory=list)  # (query, the top result's title)

    @property
    def share_rejected(self) -> float:
        return (len(self.empty) + len(self.no_close_match)) / self.n_queries if self.n_queries else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"n_queries": self.n_queries, "share_rejected": self.share_rejected, "empty": self.empty,
                "no_close_match": self.no_close_match,
                "answered": [{"query": q, "top": t} for q, t in self.answered]}  # fmt: skip


def negative_queries_evaluate(*, queries: Sequence[str], k: int = 5) -> NegativeResult:
    result = NegativeResult(n_queries=len(queries))
    for query in queries:
        found = text.text_search(query=query, k=k)
        if getattr(found, "no_good_match", False):
            result.no_close_match.append(query)
        elif not found.hits:
            result.empty.append(query)
        else:
            top = Product.objects.filter(pk=found.hits[0].product_id).values_list("title", flat=True).first()
            result.answered.append((query, top or "?"))
    return result


# --- the multilingual table ----------------------------------------------------------------------------


def translations_find(path: Path) -> dict[str, Path]:
    """``queries.csv`` and its translations beside it (``queries.de.csv``…), by language (``en`` first)."""
    found = {"en": path}
    for other in sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")):
        language = other.name[len(path.stem) + 1 : -len(path.suffix)]
        if language.isalpha() and 2 <= len(language) <= 3:
            found[language] = other
    return found


@dataclass
class LanguageRow:
    source: str  # "text" (the space alone) or SHOPPER_SEARCH
    model: str  # the text space's model version
    precision: dict[str, float]  # language -> precision@k
    n_queries: dict[str, int]

    @property
    def cross_lingual(self) -> float | None:
        others = [value for language, value in self.precision.items() if language != "en"]
        return sum(others) / len(others) if others else None

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "model": self.model, "precision_at_k": self.precision,
                "n_queries": self.n_queries, "cross_lingual": self.cross_lingual}  # fmt: skip


def space_alone_precision(*, space: str, queries: Sequence[TextQuery], k: int = 5) -> EvaluationResult:
    """The text space's own nearest products to each query, without gates or fusion: the model's quality."""
    version = active_version(space)
    embedder = embedders.load(space)
    outcomes: list[QueryOutcome] = []
    for item in queries:
        found = _members(item.category)
        if found is None or not found[1]:
            continue
        name, members = found
        vector = embedder.embed_texts([item.query])[0]
        nearest = get_store().nearest_products(space=space, version=version.version, dimension=version.dimension,
                                               vector=vector, k=k)  # fmt: skip
        neighbours = [Neighbour(product_id=pk, image_id=None, score=1.0 - distance, relevant=pk in members)
                      for pk, distance in nearest]  # fmt: skip
        outcomes.append(score_query(label=item.query, category=name, neighbours=neighbours, k=k,
                                    n_relevant=len(members)))  # fmt: skip
    if not outcomes:
        raise NothingToEvaluate(f"none of the queries could be evaluated in {space}")
    return EvaluationResult(space=space, version=version.version, k=k, mode="text-queries", queries=outcomes)


def multilingual_table(*, queries_path: Path, k: int = 5) -> list[LanguageRow]:
    """Precision@k per language of the translated positive queries: in each text space alone (the model), and
    through the shopper's search (where the English full-text source and the gates play their part)."""
    files = translations_find(queries_path)
    spaces = embedders.text_spaces()
    rows = [LanguageRow(source=space, model=active_version(space).version, precision={}, n_queries={})
            for space in spaces]  # fmt: skip
    rows.append(LanguageRow(source=SHOPPER_SEARCH, model="+".join(r.model.split("-")[0] for r in rows), precision={},
                            n_queries={}))  # fmt: skip
    for language, path in files.items():
        queries = text_queries_read(path)
        results = [space_alone_precision(space=space, queries=queries, k=k) for space in spaces]
        results.append(shopper_text_queries(queries=queries, k=k))
        for row, result in zip(rows, results, strict=True):
            row.precision[language] = result.precision_at_k
            row.n_queries[language] = result.n_queries
    return rows


# --- calibration ----------------------------------------------------------------------------------------


@dataclass
class SourceScores:
    """A source's answers to positive and negative queries, before its gate: per query, its best score, the
    share of its top 5 in the best hit's category, and whether the query shares a word with the catalogue."""

    source: str
    calibration: text.Calibration
    positives: list[tuple[float, float, bool]] = field(default_factory=list)
    negatives: list[tuple[float, float, bool]] = field(default_factory=list)

    @staticmethod
    def _answers(item: tuple[float, float, bool], gate: float, agreement: float) -> bool:
        best, agreed, evidence = item
        return evidence or (best >= gate and agreed >= agreement)

    def answered(self, gate: float, agreement: float) -> tuple[float, float]:
        """Shares of positive and of negative queries this source answers with this gate and agreement."""
        share = [sum(self._answers(i, gate, agreement) for i in items) / len(items) if items else 0.0
                 for items in (self.positives, self.negatives)]  # fmt: skip
        return share[0], share[1]

    def suggest(self, *, rejected: float = 0.85) -> tuple[float, float] | None:
        """The (gate, agreement) that keeps the most positive queries while rejecting at least ``rejected`` of
        the negatives; None when none does."""
        best: tuple[float, float, float] | None = None
        for agreement in (0.0, 0.6, 0.8, 1.0):
            for gate in sorted({round(b, 3) for b, _, _ in self.positives + self.negatives}):
                kept, let_in = self.answered(gate, agreement)
                if 1 - let_in >= rejected and (best is None or kept > best[0]):
                    best = (kept, gate, agreement)
        return (best[1], best[2]) if best else None

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "positives": self.positives, "negatives": self.negatives,
                "gate": self.calibration.gate, "agreement": self.calibration.agreement,
                "answered": self.answered(self.calibration.gate, self.calibration.agreement),
                "suggested": self.suggest()}  # fmt: skip


def calibration_scores(*, positives: Sequence[str], negatives: Sequence[str], k: int = 5) -> list[SourceScores]:
    """Each vector source's best raw score, category agreement and lexical evidence on each query (colour words
    taken out, as the search does). Full-text sources need no gate: they answer only lexical matches."""
    table: dict[str, SourceScores] = {}
    for queries, positive in ((positives, True), (negatives, False)):
        for query in queries:
            words = query_colours(query)[1]
            evidence = text.lexical_evidence(words)
            rankings = text.source_rankings(query=words, k=max(k, 5), evidence=True)
            for name, (ranking, calibration) in rankings.items():
                if name in (text.FULLTEXT, text.TITLE) or ranking.best is None:
                    continue
                scores = table.setdefault(name, SourceScores(source=name, calibration=calibration))
                item = (ranking.best, text.agreement(ranking.hits), evidence)
                (scores.positives if positive else scores.negatives).append(item)
    return list(table.values())


# --- what `evaluate` prints -------------------------------------------------------------------------------


def siblings(queries_path: Path) -> tuple[Path | None, Path | None]:
    """``colour_queries.csv`` and ``negative_queries.csv`` beside a ``queries.csv``, where they exist."""
    colour, negative = queries_path.parent / "colour_queries.csv", queries_path.parent / "negative_queries.csv"
    return (colour if colour.is_file() else None), (negative if negative.is_file() else None)


@dataclass
class TextQualityReport:
    k: int
    positive: EvaluationResult | None = None
    colour: EvaluationResult | None = None
    negative: NegativeResult | None = None
    languages: list[LanguageRow] = field(default_factory=list)
    calibration: list[SourceScores] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        k, out = self.k, []
        if self.positive is not None:
            out.append(f"shopper text search, positive queries: precision@{k} {self.positive.precision_at_k:.3f} "
                       f"({self.positive.n_queries} queries)")  # fmt: skip
        if self.negative is not None:
            out.append(f"shopper text search, negative queries: {self.negative.share_rejected:.3f} answered with "
                       f"nothing or 'no close match' ({self.negative.n_queries} queries)")  # fmt: skip
            out += [f"  answered: {query!r} -> {top}" for query, top in self.negative.answered]
        if self.colour is not None:
            out.append(f"colour queries: precision@{k} {self.colour.precision_at_k:.3f} (a hit has the colour and the "
                       f"category; {self.colour.n_queries} queries)")  # fmt: skip
            out += [f"  {q.precision:.1f}  {q.label}" for q in self.colour.queries if q.precision < 1]
        if self.languages:
            languages = list(self.languages[0].precision)
            out.append(f"multilingual (precision@{k}):" + " " * 29 + "  ".join(f"{lang:>5}" for lang in languages)
                       + "  cross-lingual")  # fmt: skip
            for row in self.languages:
                cells = "  ".join(f"{row.precision[lang]:>5.3f}" for lang in languages)
                cross = f"{row.cross_lingual:.3f}" if row.cross_lingual is not None else "-"
                out.append(f"  {row.source:<12} {row.model[:40]:<40} {cells}  {cross}")
        for scores in self.calibration:
            c = scores.calibration
            kept, let_in = scores.answered(c.gate, c.agreement)
            suggested = scores.suggest()
            out.append(f"calibration {scores.source}: best score of positives "
                       f"{_spread(sorted(b for b, _, _ in scores.positives))}, of negatives "
                       f"{_spread(sorted(b for b, _, _ in scores.negatives))}")  # fmt: skip
            out.append(f"  with its gate {c.gate:.3f} and agreement {c.agreement:.1f} (lexical evidence answers "
                       f"anyway) it answers {kept:.2f} of the positives and {let_in:.2f} of the negatives; "
                       + (f"the best here for >= 0.85 rejected: gate {suggested[0]:.3f}, agreement {suggested[1]:.1f}"
                          if suggested else "no gate rejects 0.85 of the negatives here"))  # fmt: skip
        out += [f"  not measured: {problem}" for problem in self.problems]
        return out

    def as_dict(self) -> dict[str, object]:
        return {"positive": self.positive.as_dict() if self.positive else None,
                "negative": self.negative.as_dict() if self.negative else None,
                "colour": self.colour.as_dict() if self.colour else None,
                "multilingual": [row.as_dict() for row in self.languages],
                "calibration": [scores.as_dict() for scores in self.calibration],
                "problems": self.problems}  # fmt: skip


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "(none)"
    return f"min {values[0]:.3f} / median {values[len(values) // 2]:.3f} / max {values[-1]:.3f} (n={len(values)})"


def text_quality_run(*, queries_path: Path, k: int = 5, colour_path: Path | None = None,
                     negative_path: Path | None = None, calibrate: bool = False) -> TextQualityReport:  # fmt: skip
    """Everything about shoppers' text search that ``evaluate --queries`` prints beside the per-space tables.
    A part that cannot be measured (no vectors yet, a bad file) is listed in ``problems``; the rest still is."""
    report = TextQualityReport(k=k)
    positives = text_queries_read(queries_path)

    def attempt(name: str, measure: Callable[[], T]) -> T | None:
        try:
            return measure()
        except (NothingToEvaluate, BadQueryFile, NotIndexed) as exc:
            report.problems.append(f"{name}: {exc}")
            return None

    report.positive = attempt("positive queries", lambda: shopper_text_queries(queries=positives, k=k))
    negatives = (attempt("negative queries", lambda: negative_queries_read(negative_path)) if negative_path
                 else None) or []  # fmt: skip
    if negatives:
        report.negative = attempt("negative queries", lambda: negative_queries_evaluate(queries=negatives, k=k))
    if colour_path is not None:
        report.colour = attempt("colour queries", lambda: colour_query_precision(
            queries=colour_queries_read(colour_path), k=k))  # fmt: skip
    if len(translations_find(queries_path)) > 1:
        report.languages = attempt("multilingual table", lambda: multilingual_table(queries_path=queries_path,
                                                                                     k=k)) or []  # fmt: skip
    if calibrate:
        report.calibration = attempt("calibration", lambda: calibration_scores(
            positives=[q.query for q in positives], negatives=negatives, k=k)) or []  # fmt: skip
    return report
