"""manage.py evaluate --space KEY|hybrid|all [--k 5] [--queries FILE.csv [--colour-queries FILE]
[--negative-queries FILE] [--calibrate]] [--report DIR] [--json];
manage.py evaluate --tune hybrid [--folds 5] [--k 5] [--json]"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from search.lab.evaluation import (
    BadQueryFile,
    NothingToEvaluate,
    Skipped,
    StartComparison,
    compare_with_start,
    evaluate_all,
    evaluate_space,
    evaluate_text_queries,
    text_queries_read,
    text_spaces_for_queries,
)
from search.lab.metrics import EvaluationResult
from search.lab.text_quality import siblings, text_quality_run
from search.querying.similar import HYBRID


class Command(BaseCommand):
    help = (
        "Retrieval quality with category as the label: leave-one-out over the catalogue (precision@k, recall@k, "
        "mAP@k, overall and per category), optionally text queries from a CSV, and an HTML report."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", choices=[*settings.VITRINE_SPACES, HYBRID, "all"],
                            help="One space, hybrid (an image space and the text space together), or all to "
                                 "compare every enabled space and hybrid (unavailable ones are listed with the "
                                 "reason).")  # fmt: skip
        parser.add_argument("--tune", choices=[HYBRID],
                            help="Choose hybrid's weights for this catalogue by cross-validation over categories, "
                                 "print the table and record the choice (used by 'Looks similar' from then "
                                 "on).")  # fmt: skip
        parser.add_argument("--folds", type=int, default=5, help="With --tune: folds of categories.")
        parser.add_argument("--k", type=int, default=5)
        parser.add_argument("--queries", type=Path, default=None,
                            help="CSV with columns query,category: text-to-product search in the spaces that take "
                                 "text (clip, text).")  # fmt: skip
        parser.add_argument("--colour-queries", type=Path, default=None, metavar="FILE",
                            help="CSV query,colour,category (default: colour_queries.csv beside --queries): "
                                 "precision@k of the shopper's search, a hit having the colour and the "
                                 "category.")  # fmt: skip
        parser.add_argument("--negative-queries", type=Path, default=None, metavar="FILE",
                            help="CSV query: things the shop does not sell (default: negative_queries.csv beside "
                                 "--queries); the share answered with nothing or 'no close match'.")  # fmt: skip
        parser.add_argument("--calibrate", action="store_true",
                            help="Also print each text-search source's best scores on positive and negative queries, "
                                 "from which VITRINE_TEXT_CALIBRATION's gates are chosen.")  # fmt: skip
        parser.add_argument(
            "--suggest",
            action="store_true",
            help="Category suggestions, leave-one-out: top-1/top-3 accuracy, accuracy vs coverage.",
        )
        parser.add_argument("--report", type=Path, default=None, metavar="DIR",
                            help="Write an HTML report (charts, neighbour grids, worst queries) into DIR.")  # fmt: skip
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print JSON: one object for one space; {k, results, skipped...} for all.")  # fmt: skip

    def handle(self, *args: Any, space: str | None, k: int, queries: Path | None, report: Path | None,
               as_json: bool, tune: str | None = None, folds: int = 5, colour_queries: Path | None = None,
               negative_queries: Path | None = None, calibrate: bool = False, **options: Any) -> None:  # fmt: skip
        if k < 1:
            raise CommandError("--k must be at least 1")
        if tune:
            self._tune(k=k, folds=folds, as_json=as_json)
            return
        if options.get("suggest"):
            self._suggest(report=report, as_json=as_json)
            return
        if space is None:
            raise CommandError("give --space KEY|hybrid|all, or --tune hybrid")
        text_queries = None
        if queries is not None:
            try:
                text_queries = text_queries_read(queries)
            except BadQueryFile as exc:
                raise CommandError(str(exc)) from None
        results: list[EvaluationResult] = []
        skipped: list[Skipped] = []
        if space == "all":
            results, skipped = evaluate_all(k=k)
        else:
            try:
                results = [evaluate_space(space=space, k=k)]
            except NothingToEvaluate as exc:
                if text_queries is None:
                    raise CommandError(str(exc)) from None
                skipped.append(Skipped(space=space, reason=str(exc)))
        text_results: list[EvaluationResult] = []
        if text_queries is not None:
            spaces = text_spaces_for_queries() if space == "all" else [space]
            for key in spaces:
                try:
                    text_results.append(evaluate_text_queries(space=key, queries=text_queries, k=k))
                except NothingToEvaluate as exc:
                    if space != "all":
                        raise CommandError(str(exc)) from None
                    skipped.append(Skipped(space=f"{key} (text queries)", reason=str(exc)))
        quality = None
        if queries is not None and space == "all":
            # The shopper's search itself (every source fused and calibrated): positive, negative and colour
            # queries, and the multilingual table when translations (queries.de.csv…) lie beside the file.
            colour_default, negative_default = siblings(queries)
            quality = text_quality_run(queries_path=queries, k=k, colour_path=colour_queries or colour_default,
                                       negative_path=negative_queries or negative_default,
                                       calibrate=calibrate)  # fmt: skip
        comparisons = [c for c in (compare_with_start(r, results) for r in results) if c is not None]
        if report is not None:
            from search.lab.report import report_write

            page = report_write(directory=report, k=k, results=results, skipped=skipped, text_results=text_results,
                                comparisons=comparisons)  # fmt: skip
            if not as_json:
                self.stdout.write(f"report: {page}")
        if as_json:
            body = self._json(space, k, results, skipped, text_results, comparisons)
            if quality is not None:
                body["text_search"] = quality.as_dict()
            self.stdout.write(json.dumps(body))
            return
        self._table(k, results, skipped, comparisons)
        if text_results:
            self.stdout.write("")
            self.stdout.write(f"text queries ({len(text_queries or [])} in {queries}):")
            self._table(k, text_results, [], [])
            for result in text_results:
                for reason in result.skipped_queries:
                    self.stdout.write(self.style.WARNING(f"  {result.space}: skipped {reason}"))
        if quality is not None:
            self.stdout.write("")
            for line in quality.lines():
                self.stdout.write(line)

    def _suggest(self, *, report: Path | None, as_json: bool) -> None:
        from search.lab import suggestions

        try:
            result = suggestions.evaluate_suggestions(log=self.stderr.write)
        except suggestions.NothingToSuggest as exc:
            raise CommandError(str(exc)) from None
        if as_json:
            self.stdout.write(json.dumps(result.as_dict()))
        else:
            for line in result.lines():
                self.stdout.write(line)
        if report is not None:
            page = suggestions.report_write(directory=report, result=result)
            if not as_json:
                self.stdout.write(f"report: {page}")

    @staticmethod
    def _json(space: str, k: int, results: list[EvaluationResult], skipped: list[Skipped],
              text_results: list[EvaluationResult],
              comparisons: list[StartComparison]) -> dict[str, object]:  # fmt: skip
        starts = {c.space: c.as_dict() for c in comparisons}

        def one(result: EvaluationResult) -> dict[str, object]:
            out = result.as_dict()
            if result.space in starts:
                out["start"] = starts[result.space]
            return out

        if space != "all" and results:
            # One space keeps DESIGN.md's shape: one object with space, k, n_queries and the metrics.
            single = one(results[0])
            if text_results:
                single["text_queries"] = text_results[0].as_dict()
            return single
        return {"k": k, "results": [one(r) for r in results],
                "skipped": [{"space": s.space, "reason": s.reason} for s in skipped],
                "text_queries": [r.as_dict() for r in text_results]}  # fmt: skip

    def _table(self, k: int, results: list[EvaluationResult], skipped: list[Skipped],
               comparisons: list[StartComparison]) -> None:  # fmt: skip
        header = f"{'space':<8} {'queries':>7} {'precision@' + str(k):>12} {'recall@' + str(k):>9} {'mAP@' + str(k):>7}"
        self.stdout.write(header + "  version")
        for r in results:
            self.stdout.write(f"{r.space:<8} {r.n_queries:>7} {r.precision_at_k:>12.3f} {r.recall_at_k:>9.3f} "
                              f"{r.map_at_k:>7.3f}  {r.version}")  # fmt: skip
        for s in skipped:
            self.stdout.write(self.style.WARNING(f"{s.space:<8} skipped: {s.reason}"))
        if len(results) == 1:
            self.stdout.write("")
            self.stdout.write(f"per category ({results[0].space}): queries, precision@{k}, recall@{k}, mAP@{k}")
            for name, m in results[0].per_category.items():
                self.stdout.write(f"  {name[:28]:<28} {m.n_queries:>5} {m.precision_at_k:>8.3f} {m.recall_at_k:>8.3f} "
                                  f"{m.map_at_k:>8.3f}")  # fmt: skip
        elif results:
            self.stdout.write("")
            self.stdout.write(f"precision@{k} per category:")
            self.stdout.write(f"  {'':<28}" + "".join(f" {r.space:>8}" for r in results))
            tables = [r.per_category for r in results]
            for name in sorted({name for table in tables for name in table}):
                cells = "".join(f" {t[name].precision_at_k:>8.3f}" if name in t else f" {'-':>8}" for t in tables)
                self.stdout.write(f"  {name[:28]:<28}{cells}")
        for c in comparisons:
            style = self.style.SUCCESS if c.improved else self.style.WARNING
            self.stdout.write(style(c.sentence(k)))

    def _tune(self, *, k: int, folds: int, as_json: bool) -> None:
        from search.lab.tuning import hybrid_tune

        if folds < 2:
            raise CommandError("--folds must be at least 2")
        try:
            tuning = hybrid_tune(k=k, folds=folds)
        except NothingToEvaluate as exc:
            raise CommandError(str(exc)) from None
        if as_json:
            self.stdout.write(json.dumps(tuning.as_dict()))
            return
        write = self.stdout.write
        write(f"hybrid = {tuning.image_space} x (1 - w) + {tuning.text_space} x w, {tuning.queries} queries, "
              f"{tuning.pool} neighbours per space; precision@{k} per weight w, over all queries and on each "
              f"fold's held-out categories")  # fmt: skip
        write(f"{'w':>5} {'all':>7}" + "".join(f" {'fold ' + str(i + 1):>7}" for i in range(len(tuning.folds))))
        for j, weight in enumerate(tuning.grid):
            cells = "".join(f" {fold.held_out[j]:>7.3f}" for fold in tuning.folds)
            write(f"{weight:>5.2f} {tuning.overall[j]:>7.3f}{cells}")
        for i, fold in enumerate(tuning.folds, start=1):
            write(f"fold {i} ({', '.join(fold.categories)}): tuned on the other categories w = {fold.text_weight:.2f} "
                  f"(p@{k} {fold.train_precision:.3f}), held out p@{k} {fold.test_precision:.3f} "
                  f"over {fold.queries} queries")  # fmt: skip
        best_space, best = tuning.best_single
        singles = ", ".join(f"{space} {value:.3f}" for space, value in tuning.single.items())
        write(f"cross-validated hybrid p@{k}: {tuning.cv_precision:.3f}; each space alone: {singles}; "
              f"hybrid - best single ({best_space}) = {tuning.cv_precision - best:+.3f}")  # fmt: skip
        write(self.style.SUCCESS(
            f"chosen over all categories: {tuning.image_space} {1 - tuning.text_weight:.2f}, {tuning.text_space} "
            f"{tuning.text_weight:.2f} (in-sample p@{k} {tuning.in_sample_precision:.3f}); recorded as ranking "
            f"weights #{tuning.record.pk if tuning.record else '-'}, used by 'Looks similar' from now on"))  # fmt: skip
