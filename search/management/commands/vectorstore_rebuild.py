"""manage.py vectorstore_rebuild [--space KEY]: reload the vector store from Postgres, the source of truth.

After switching ``VITRINE_VECTOR_STORE`` to Milvus (or when its copy is suspect), this
recreates every active and building (space, version) collection from the vectors stored
in Postgres, with the current product fields, and builds each index once after the load.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from search.indexing import bulk


class Command(BaseCommand):
    help = "Rebuild the vector store's collections (Milvus) or indexes (pgvector) from the vectors in Postgres."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", action="append", choices=list(settings.VITRINE_SPACES),
                            help="Only this space (repeatable); default every space with vectors.")  # fmt: skip

    def handle(self, *args: Any, space: list[str] | None, **options: Any) -> None:
        started = time.perf_counter()

        def report(label: str, n: int) -> None:
            self.stdout.write(f"{label}: {n} vectors in the store ({time.perf_counter() - started:.1f} s)")

        loaded = bulk.vectorstore_rebuild(spaces=space, progress=report)
        self.stdout.write(self.style.SUCCESS(f"rebuilt {len(loaded)} version(s) into {settings.VITRINE_VECTOR_STORE}"))
