"""manage.py prepare_models [--space KEY ...] — load every enabled space once, one line per model.

``rundemo`` runs it before it starts the web server and the worker: on a first run this exports the models to
ONNX and saves their tokenizers (minutes on a slow machine, said here model by model), so the processes that
serve load cached files in a second, without PyTorch. Unavailable models are listed with the reason; the
command still exits 0.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from search.indexing import versions


class Command(BaseCommand):
    help = "Load (and on a first run export to ONNX) every enabled embedding model, one line per model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", action="append", dest="spaces", help="Only this space (repeatable).")

    def handle(self, *args: Any, spaces: list[str] | None, **options: Any) -> None:
        def log(line: str) -> None:
            self.stdout.write(f"  {line}")
            self.stdout.flush()

        # One line per model says it all; the loaders' own INFO lines would repeat it (-v 2 keeps them).
        quiet = options.get("verbosity", 1) < 2
        search_logger = logging.getLogger("search")
        previous = search_logger.level
        if quiet:
            search_logger.setLevel(logging.WARNING)
        try:
            result = versions.spaces_prepare(keys=spaces, log=log)
        finally:
            search_logger.setLevel(previous)
        ready = [key for key, state in result.items() if state == "available"]
        unavailable = len(result) - len(ready)
        summary = f"Models ready: {', '.join(ready) or 'none'}"
        self.stdout.write(summary + (f"; {unavailable} unavailable" if unavailable else ""))
