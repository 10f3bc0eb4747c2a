"""manage.py reindex [--space KEY] [--missing-only] [--sync] | --colours"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog.models import Product, ProductImage
from search import embedders
from search.embedders import SpaceUnavailable
from search.indexing import bulk, colouring, jobs


class Command(BaseCommand):
    help = (
        "Recompute vectors. By default queues a reindex job per space for the Celery worker; "
        "--sync computes in this process and returns when done."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--space", choices=list(settings.VITRINE_SPACES), help="One space (default: all enabled).")
        parser.add_argument("--missing-only", action="store_true", help="Only images without a current vector.")
        parser.add_argument("--sync", action="store_true", help="Compute here instead of queueing.")
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--colours", action="store_true",
                            help="Only compute pictures' dominant colours where missing (catalogues indexed before "
                                 "colours existed, or after a palette change), here, then stop.")  # fmt: skip

    def handle(self, *args: Any, space: str | None, missing_only: bool, sync: bool, batch_size: int | None,
               no_progress: bool, colours: bool = False, **options: Any) -> None:  # fmt: skip
        if colours:
            started = time.perf_counter()
            done = colouring.images_colours_fill()
            self.stdout.write(f"colours: {done} picture(s) in {time.perf_counter() - started:.1f} s")
            return
        spaces = [space] if space else embedders.enabled()
        if space and space not in embedders.enabled():
            raise CommandError(f"the {space} space is not enabled (VITRINE_ENABLED_SPACES)")
        if not sync:
            for key in spaces:
                job = jobs.reindex_job_create(space=key, missing_only=missing_only)
                self.stdout.write(f"queued reindex job #{job.pk} for {key}")
            self.stdout.write("A Celery worker runs them; progress is on the admin's Reindex jobs page.")
            return
        for key in spaces:
            text = embedders.is_text_only(key)
            total = Product.objects.count() if text else ProductImage.objects.count()
            bar = tqdm(total=total, unit="product" if text else "img", desc=key, file=sys.stderr,
                       disable=no_progress or None, dynamic_ncols=True)  # fmt: skip
            started = time.perf_counter()
            try:
                if text:
                    result = bulk.products_embed_bulk(space=key, missing_only=missing_only, progress=bar.update)
                else:
                    result = bulk.images_embed_bulk(space=key, missing_only=missing_only, batch_size=batch_size,
                                                        progress=bar.update)  # fmt: skip
            except SpaceUnavailable as exc:
                bar.close()
                self.stdout.write(self.style.WARNING(f"{key}: unavailable, skipped: {exc.reason}"))
                continue
            bar.close()
            elapsed = time.perf_counter() - started
            rate = result.processed / elapsed if elapsed > 0 else 0.0
            self.stdout.write(
                self.style.SUCCESS(f"{key}: {result.processed} embedded")
                + f", {result.failed} failed, in {elapsed:.1f} s ({rate:.1f}/s)"
            )
            for pk, reason in result.failures[:20]:
                self.stdout.write(f"  image {pk}: {reason}")
