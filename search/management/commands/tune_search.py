"""manage.py tune_search [--space KEY] [--target 0.95] — the search breadth each space needs, measured."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from search.indexing.tuning import tune_version
from search.models import SpaceVersion


class Command(BaseCommand):
    help = ("Measure recall@10 of the similar-products (image spaces) or text (text spaces) query against an exact "
            "scan for a ladder of HNSW search breadths, on the shop's own vectors, and record the smallest that "
            "reaches the target for each active version; every query of it then uses that breadth.")  # fmt: skip

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", help="Only this space (its active version).")
        parser.add_argument("--target", type=float, default=0.95, help="recall@10 to reach (default 0.95).")
        parser.add_argument("--queries", type=int, default=200,
                            help="Queries to tune with; as many again, held out, measure the result.")  # fmt: skip
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, space: str | None, target: float, queries: int, seed: int, **options: Any) -> None:
        if not 0 < target <= 1:
            raise CommandError("--target is a recall between 0 and 1")
        rows = SpaceVersion.objects.filter(state=SpaceVersion.State.ACTIVE).order_by("space")
        if space:
            rows = rows.filter(space=space)
            if not rows.exists():
                raise CommandError(f"the {space} space has no active version")
        for row in rows:
            result = tune_version(row, target=target, queries=queries, seed=seed,
                                  log=lambda line: self.stderr.write(line))  # fmt: skip
            if result.ef is None:
                continue
            line = (f"{result.space} {result.version} on {result.store}: ef {result.ef}, held-out recall@10 "
                    f"{result.recall:.3f} at {result.size} vectors (target {target})")  # fmt: skip
            if result.reached:
                self.stdout.write(line)
            else:
                self.stdout.write(self.style.WARNING(
                    line + f" -- no breadth up to {result.ef} reaches the target: build a denser graph "
                    "(more HNSW m / ef_construction) and rebuild"))  # fmt: skip
