"""manage.py evaluate --space KEY [--k 5] [--json]"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from search.evaluation import NothingToEvaluate, evaluate_space


class Command(BaseCommand):
    help = "Leave-one-out retrieval quality of a space over the catalogue, with category as the label."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", required=True, choices=list(settings.VITRINE_SPACES))
        parser.add_argument("--k", type=int, default=5)
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON object.")

    def handle(self, *args: Any, space: str, k: int, as_json: bool, **options: Any) -> None:
        if k < 1:
            raise CommandError("--k must be at least 1")
        try:
            result = evaluate_space(space=space, k=k)
        except NothingToEvaluate as exc:
            raise CommandError(str(exc)) from None
        if as_json:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        self.stdout.write(f"space {result.space} ({result.version}), {result.n_queries} queries, k={k}")
        self.stdout.write(f"{'precision@' + str(k):>14} {'recall@' + str(k):>11} {'mAP@' + str(k):>8}")
        self.stdout.write(f"{result.precision_at_k:>14.3f} {result.recall_at_k:>11.3f} {result.map_at_k:>8.3f}")
