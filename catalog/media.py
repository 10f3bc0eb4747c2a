"""The files behind product images: content-addressed storage, and the check that files and rows agree.

An image's three files (original, thumbnail, display) are named after the SHA-256 of its upload, so the same
upload always maps to the same names, and two requests may meet on them. Whoever writes or deletes them holds
that checksum's lock (``catalog.locks``), and a file is deleted only when no row references it: a request never
deletes files that another request's row uses. Files whose upload was rolled back after they were written stay
behind as orphans; ``media_check`` finds them (and rows whose files are missing) and deletes old orphans.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import Left
from django.utils import timezone

from catalog import locks
from catalog.models import ProductImage

FOLDERS = ("products/originals", "products/thumbs", "products/display")
FIELDS = {"file": "original", "thumbnail": "thumbnail", "display": "display"}
# A file younger than this may belong to an upload still on its way to committing its row.
ORPHAN_MIN_AGE = timedelta(hours=1)


def checksum_of(name: str) -> str:
    """The lock key of a stored file: the content hash its name is made of."""
    return posixpath.splitext(posixpath.basename(name))[0]


def media_file_store(*, name: str, data: bytes) -> bool:
    """Make ``name`` hold ``data``; True if this call wrote it, False if the same bytes were there already.

    The caller holds the checksum's lock and has seen that no row has this checksum, so an existing file is
    either ours to reuse (an earlier attempt's, the same bytes) or a torn leftover that nobody references."""
    if default_storage.exists(name):
        with default_storage.open(name, "rb") as existing:
            if existing.read(len(data) + 1) == data:
                return False
        default_storage.delete(name)
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:  # only a writer that ignores the lock could have raced us to it
        default_storage.delete(saved)
        raise RuntimeError(f"{name} appeared while it was being stored")
    return True


def media_files_delete_unreferenced(*, names: Iterable[str]) -> list[str]:
    """Delete those of ``names`` that no image row references (checked under their checksums' locks, so an
    upload reusing them either committed its row first or finds them gone and writes them again)."""
    names = sorted(set(names))
    if not names:
        return []
    with transaction.atomic():
        locks.xact_lock(kind=locks.Kind.CHECKSUM, keys=[checksum_of(name) for name in names])
        referenced = _referenced(names)
        doomed = [name for name in names if name not in referenced]
        for name in doomed:
            default_storage.delete(name)
    return doomed


def _referenced(names: list[str]) -> set[str]:
    rows = ProductImage.objects.filter(Q(file__in=names) | Q(thumbnail__in=names) | Q(display__in=names))
    return {name for row in rows.values_list(*FIELDS) for name in row if name}


# --- the check: files against rows -----------------------------------------------------------------


@dataclass
class MissingFile:
    """A file an image row references that storage does not have."""

    image_id: int
    product_id: int
    product_title: str
    field: str  # "original", "thumbnail" or "display"
    name: str


@dataclass
class OrphanFile:
    """A stored file that no image row references."""

    name: str
    size: int
    modified: datetime


@dataclass
class MediaAudit:
    rows: int = 0
    files: int = 0
    missing: list[MissingFile] = field(default_factory=list)
    orphans: list[OrphanFile] = field(default_factory=list)
    checked_at: datetime = field(default_factory=timezone.now)

    @property
    def orphan_bytes(self) -> int:
        return sum(orphan.size for orphan in self.orphans)


def _listing(folder: str) -> tuple[list[str], list[str]]:
    try:
        return default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return [], []


def media_audit() -> MediaAudit:
    """Every image row whose files are missing, and every file under the image folders that no row references.

    Bucket by bucket (the first two hex digits of the checksum, the folders' own layout), rows are read before
    the files are listed: a row committed meanwhile had its files written before it, so it is never reported
    missing by mistake; its files may show as young orphans, which are never deleted."""
    audit = MediaAudit()
    prefixes = ProductImage.objects.annotate(prefix=Left("checksum", 2)).values_list("prefix", flat=True)
    buckets = set(prefixes.distinct().order_by()) | {d for folder in FOLDERS for d in _listing(folder)[0]}
    for bucket in sorted(buckets):
        rows = list(
            ProductImage.objects.filter(checksum__startswith=bucket)
            .values_list("pk", "product_id", "product__title", *FIELDS)
            .order_by("pk")
        )
        listed = {f"{folder}/{bucket}/{name}" for folder in FOLDERS for name in _listing(f"{folder}/{bucket}")[1]}
        audit.rows += len(rows)
        audit.files += len(listed)
        referenced: set[str] = set()
        for pk, product_id, title, *names in rows:
            for label, name in zip(FIELDS.values(), names, strict=True):
                if not name:
                    continue
                referenced.add(name)
                here = name in listed or (posixpath.dirname(name) not in _bucket_dirs(bucket)
                                          and default_storage.exists(name))  # fmt: skip
                if not here:
                    audit.missing.append(MissingFile(pk, product_id, title, label, name))
        for name in sorted(listed - referenced):
            try:
                orphan = OrphanFile(name, default_storage.size(name), default_storage.get_modified_time(name))
            except FileNotFoundError:  # deleted since it was listed
                continue
            audit.orphans.append(orphan)
    return audit


def _bucket_dirs(bucket: str) -> set[str]:
    return {f"{folder}/{bucket}" for folder in FOLDERS}


def media_orphans_delete(*, audit: MediaAudit, min_age: timedelta = ORPHAN_MIN_AGE) -> list[OrphanFile]:
    """Delete the orphans of ``audit`` older than ``min_age`` that still have no row; returns those deleted."""
    cutoff = timezone.now() - min_age
    old = [orphan for orphan in audit.orphans if orphan.modified <= cutoff]
    deleted = set(media_files_delete_unreferenced(names=[orphan.name for orphan in old]))
    return [orphan for orphan in old if orphan.name in deleted]


_recent: dict[tuple[str, str], MediaAudit] = {}


def media_audit_recent(*, max_age_s: float = 300.0) -> MediaAudit:
    """``media_audit()``, reused for ``max_age_s`` seconds in this process (for /readyz, which may be polled)."""
    key = (str(settings.MEDIA_ROOT), str(connection.settings_dict["NAME"]))
    audit = _recent.get(key)
    if audit is None or (timezone.now() - audit.checked_at).total_seconds() > max_age_s:
        audit = _recent[key] = media_audit()
    return audit


def images_missing_files(*, images: Iterable[ProductImage]) -> dict[int, list[str]]:
    """For the admin: image id -> the labels ("original", "thumbnail", "display") of its files storage lacks."""
    found: dict[int, list[str]] = {}
    for image in images:
        absent = [label for attr, label in FIELDS.items()
                  if (name := getattr(image, attr).name) and not default_storage.exists(name)]  # fmt: skip
        if absent:
            found[image.pk] = absent
    return found
