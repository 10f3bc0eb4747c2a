"""manage.py quantize --space KEY [--max-drop 0.01] [--k 5] [--json]"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from search.embedders import SpaceUnavailable
from search.lab.evaluation import NothingToEvaluate
from search.lab.quantization import space_quantize


class Command(BaseCommand):
    help = (
        "Build a space's int8 (ONNX dynamic quantization) version beside fp32, compare evaluate's precision@k on "
        "this catalogue, and record whether the space uses int8 (only if it loses at most --max-drop)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", required=True, choices=list(settings.VITRINE_SPACES))
        parser.add_argument("--max-drop", type=float, default=0.01, help="Largest precision@k loss accepted.")
        parser.add_argument("--k", type=int, default=5)
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the decision as JSON.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, space: str, max_drop: float, k: int, as_json: bool, no_progress: bool,
               **options: Any) -> None:  # fmt: skip
        if k < 1:
            raise CommandError("--k must be at least 1")
        bar = tqdm(unit="img", desc=f"{space} fp32 + int8", file=sys.stderr, disable=no_progress or None)
        try:
            decision = space_quantize(space=space, max_drop=max_drop, k=k, progress=bar.update)
        except (SpaceUnavailable, NothingToEvaluate) as exc:
            raise CommandError(getattr(exc, "reason", str(exc))) from None
        finally:
            bar.close()
        if as_json:
            self.stdout.write(json.dumps(decision.as_dict()))
            return
        verdict = self.style.SUCCESS("accepted") if decision.accepted else self.style.WARNING("rejected")
        self.stdout.write(
            f"{space}: int8 {verdict}: precision@{k} {decision.precision_int8:.4f} vs fp32 "
            f"{decision.precision_fp32:.4f} (drop {decision.drop:+.4f}, limit {max_drop}) over {decision.n_queries} "
            f"queries; reindex {decision.int8_img_per_s:.1f} img/s int8"
        )
        if decision.accepted:
            self.stdout.write(f"{decision.int8_version} is now active. Restart workers and web processes so "
                              "they load the int8 model.")  # fmt: skip
