"""manage.py import_images PATH [--manifest FILE.csv]"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog import hooks, services
from catalog.importing import ImportItem, ManifestError, images_import
from catalog.models import Category, Product
from catalog.uploads import FileOutcome

SKIPPED_SHOWN = 20
PROGRESS_EVERY_S = 5


class Command(BaseCommand):
    help = (
        "Import product images from a folder tree (category = first folder level, title from the file name) "
        "or from a CSV manifest with columns image,title,category[,description,price,sku,color]. "
        "Idempotent: images already in the catalogue (same SHA-256) are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="Folder holding the images (manifest paths are relative to it).")
        parser.add_argument("--manifest", type=Path, help="CSV manifest; without it the folder tree is imported.")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")
        parser.add_argument("--no-notes", action="store_true",
                            help="Skip the checks of the imported pictures (look-alikes of existing products, "
                                 "category suggestions): faster on a big import.")  # fmt: skip
        parser.add_argument("--suggest-categories", action="store_true",
                            help="Give each imported product without a category the category its look-alikes "
                                 "vote for, when the vote's confidence reaches --suggest-threshold; every "
                                 "suggestion is listed.")  # fmt: skip
        parser.add_argument("--suggest-threshold", type=float, default=None,
                            help="Confidence (0-1) a suggestion needs to be applied (default: the shop's, "
                                 "VITRINE_SUGGEST's MIN_CONFIDENCE).")  # fmt: skip

    def handle(self, *args: Any, path: Path, manifest: Path | None, no_progress: bool, no_notes: bool = False,
               **options: Any) -> None:  # fmt: skip
        if manifest is not None and not manifest.is_absolute() and not manifest.exists():
            manifest = path / manifest

        def progress(items: Iterator[ImportItem], total: int) -> Iterator[ImportItem]:
            if not no_progress and not sys.stderr.isatty():
                return self._progress_lines(items, total)  # a log, not a terminal: a line every few seconds
            return iter(
                tqdm(
                    items,
                    total=total,
                    unit="file",
                    desc="Importing",
                    file=sys.stderr,
                    disable=no_progress or None,
                    dynamic_ncols=True,
                )
            )

        # The report below names every failure; per-file log lines would repeat it.
        importing_logger = logging.getLogger("catalog.importing")
        previous_level = importing_logger.level
        if options.get("verbosity", 1) < 2:
            importing_logger.setLevel(logging.ERROR)
        try:
            report = images_import(root=path, manifest=manifest, progress=progress)
        except ManifestError as exc:
            raise CommandError(str(exc)) from None
        finally:
            importing_logger.setLevel(previous_level)

        out = self.stdout
        out.write(
            self.style.SUCCESS(f"Imported {len(report.imported)} file(s)")
            + f", skipped {len(report.skipped)}, failed {len(report.failed)}."
        )
        list_all = options.get("verbosity", 1) >= 2
        for title, outcomes, style, limit in (
            ("Skipped", report.skipped, self.style.WARNING, None if list_all else SKIPPED_SHOWN),
            ("Failed", report.failed, self.style.ERROR, None),  # every failure is always named
        ):
            if outcomes:
                out.write(style(f"{title}:"))
                for outcome in outcomes[:limit]:
                    out.write(f"  {outcome.name}: {outcome.reason}")
                if limit is not None and len(outcomes) > limit:
                    out.write(f"  … and {len(outcomes) - limit} more (-v 2 lists them all)")
        if not no_notes:
            threshold = options.get("suggest_threshold")
            if threshold is None:
                threshold = float(getattr(settings, "VITRINE_SUGGEST", {}).get("MIN_CONFIDENCE", 0.6))
            self._notes(report.imported, suggest=bool(options.get("suggest_categories")), threshold=threshold)

    def _notes(self, imported: list[FileOutcome], *, suggest: bool, threshold: float) -> None:
        """Other apps' notes on the new pictures (search: look-alikes of existing products, category suggestions),
        one line each; with ``suggest``, categories are filled in where the confidence reaches ``threshold``."""
        images = [o.image for o in imported if o.image is not None]
        if images:  # the models may load (or export) first: say what the command is doing meanwhile
            self.stderr.write(f"Checking {len(images)} new picture(s) against the catalogue (--no-notes skips this) …")
        notes = hooks.upload_notes(images=images, names=["lookalikes", *(["suggestions"] if suggest else [])])
        names = {o.image.pk: o.name for o in imported if o.image is not None}
        if suggest:
            self._suggestions(imported, notes, names, threshold)
        lookalikes = [(names[pk], note) for pk, items in notes.items() for note in items if note.kind == "lookalike"]
        if lookalikes:
            self.stdout.write(self.style.WARNING(f"Look-alikes ({len(lookalikes)}):"))
            for name, note in sorted(lookalikes, key=lambda item: item[0]):
                self.stdout.write(f"  {name}: {note.text}")

    def _progress_lines(self, items: Iterator[ImportItem], total: int) -> Iterator[ImportItem]:
        said = time.monotonic()
        for done, item in enumerate(items):
            if time.monotonic() - said >= PROGRESS_EVERY_S:
                self.stderr.write(f"Importing: {done}/{total} files")
                said = time.monotonic()
            yield item

    def _suggestions(self, imported: list[FileOutcome], notes: dict[int, list[hooks.UploadNote]],
                     names: dict[int, str], threshold: float) -> None:  # fmt: skip
        products = {o.image.pk: o.product for o in imported if o.image is not None and o.product is not None}
        found = [(names[pk], products[pk], note) for pk, items in notes.items() for note in items
                 if note.kind == "category" and pk in products]  # fmt: skip
        applied = 0
        lines = []
        for name, product, note in sorted(found, key=lambda item: item[0]):
            confidence = note.confidence or 0.0
            category = Category.objects.filter(path=note.value).first()
            # Blanks only: a product that has a category by now (staff, another import) keeps it.
            blank = Product.objects.filter(pk=product.pk, category__isnull=True).exists()
            label = category.name if category is not None else note.value
            if category is not None and blank and confidence >= threshold:
                services.products_update(product_ids=[product.pk], category=category)
                applied += 1
                lines.append(f"  {name}: {label} ({confidence:.0%}) applied")
            else:
                why = "has a category" if not blank else f"below {threshold:.0%}"
                lines.append(f"  {name}: {label} ({confidence:.0%}) not applied, {why}")
        self.stdout.write(self.style.SUCCESS(f"Category suggestions: {len(found)}, {applied} applied "
                                             f"(confidence >= {threshold:.0%}):"))  # fmt: skip
        for line in lines:
            self.stdout.write(line)
