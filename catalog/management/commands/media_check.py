"""manage.py media_check [--delete-orphans]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from django.utils.timesince import timesince

from catalog import media


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 1_048_576 else f"{n / 1_048_576:.1f} MB"


class Command(BaseCommand):
    help = (
        "Compare stored image files with the rows that reference them: rows whose files are missing, and files "
        "no row references (orphans), with sizes. --delete-orphans deletes orphans older than an hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--delete-orphans", action="store_true",
            help="Delete orphan files older than an hour (younger ones may belong to uploads in progress).",
        )  # fmt: skip

    def handle(self, *args: Any, delete_orphans: bool, **options: Any) -> None:
        audit = media.media_audit()
        out, style = self.stdout, self.style
        out.write(f"Checked {audit.rows} image row(s) and {audit.files} file(s).")
        if audit.missing:
            out.write(style.ERROR(f"Rows whose files are missing ({len(audit.missing)}):"))
            for row in audit.missing:
                out.write(f"  image {row.image_id} of product {row.product_id} “{row.product_title}”: "
                          f"{row.field} {row.name}")  # fmt: skip
        else:
            out.write(style.SUCCESS("No row lacks a file."))
        if audit.orphans:
            out.write(style.WARNING(f"Orphan files, referenced by no row ({len(audit.orphans)}, "
                                    f"{_size(audit.orphan_bytes)}):"))  # fmt: skip
            now = timezone.now()
            for orphan in audit.orphans:
                out.write(f"  {orphan.name}  {_size(orphan.size)}  written {timesince(orphan.modified, now)} ago")
        else:
            out.write(style.SUCCESS("No orphan files."))
        if delete_orphans and audit.orphans:
            deleted = media.media_orphans_delete(audit=audit)
            kept = len(audit.orphans) - len(deleted)
            out.write(style.SUCCESS(f"Deleted {len(deleted)} orphan file(s), {_size(sum(o.size for o in deleted))}")
                      + (f"; kept {kept} younger than an hour (or referenced again)." if kept else "."))  # fmt: skip
