"""manage.py import_images PATH [--manifest FILE.csv]"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog import hooks
from catalog.importing import ImportItem, ManifestError, images_import
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
            self._notes(report.imported)

    def _notes(self, imported: list[FileOutcome]) -> None:
        """Other apps' notes on the new pictures (search: look-alikes of existing products), one line each."""
        images = [o.image for o in imported if o.image is not None]
        notes = hooks.upload_notes(images=images)
        names = {o.image.pk: o.name for o in imported if o.image is not None}
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
