"""Bulk import of images from a folder tree or a CSV manifest (``manage.py import_images``)."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from catalog import imaging, services
from catalog.imaging import ImageRejected
from catalog.models import Category, Product, ProductImage, price_limits
from catalog.services import DuplicateImage
from catalog.uploads import FileOutcome

logger = logging.getLogger(__name__)

MANIFEST_REQUIRED = ("image", "title", "category")
MANIFEST_OPTIONAL = ("description", "price", "sku", "color", "stock")


class ManifestError(ValueError):
    """The manifest as a whole is unusable (missing columns, unreadable file)."""


@dataclass
class ImportItem:
    """One file to import, with whatever the manifest says about it."""

    path: Path
    label: str  # how the file is named in reports: relative to the import root
    title: str
    category: str = ""
    description: str = ""
    price: str = ""
    sku: str = ""
    color: str = ""
    stock: str = ""
    problem: str = ""  # set when the row is unusable before the file is even read
    root: Path | None = None  # the import folder, which the file must still resolve inside when it is read


@dataclass
class ImportReport:
    outcomes: list[FileOutcome] = field(default_factory=list)

    def _with(self, status: str) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def imported(self) -> list[FileOutcome]:
        return self._with("imported")

    @property
    def skipped(self) -> list[FileOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[FileOutcome]:
        return self._with("failed")


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _leaves(path: Path, root: Path) -> bool:
    """Whether ``path`` (through any link) resolves outside ``root`` (already resolved)."""
    return not path.resolve().is_relative_to(root)


# What the catalogue's columns hold: a row is checked against these before anything is written.
_TEXT_COLUMNS = ("title", "sku", "color")
MAX_CATEGORY_DEPTH = 8  # levels of about 120 characters fit in Category.path (1,000)


def _max_length(model: type[Product] | type[Category], name: str) -> int:
    return int(getattr(model._meta.get_field(name), "max_length", 0) or 0)


def _row_problems(item: ImportItem) -> list[str]:
    """Every reason ``item``'s fields cannot be stored as they are, one per column, in column order."""
    problems = []
    for column in ("image", "title", "category", "description", "price", "sku", "color", "stock"):
        value = str(item.path) if column == "image" else getattr(item, column)
        if "\x00" in value:
            problems.append(f"{column} contains a NUL character")
        elif column in _TEXT_COLUMNS:
            limit = _max_length(Product, column)
            if len(value) > limit:
                problems.append(f"{column} is {len(value)} characters, at most {limit}")
        elif column == "category" and value:
            levels = services.category_levels(value)
            limit = _max_length(Category, "name")
            problems += [f"category level {level[:20] + '…'!r} is {len(level)} characters, at most {limit}"
                         for level in levels if len(level) > limit]  # fmt: skip
            if len(levels) > MAX_CATEGORY_DEPTH:
                problems.append(f"category has {len(levels)} levels, at most {MAX_CATEGORY_DEPTH}")
        elif column in ("price", "stock"):
            try:
                _parse_price(value) if column == "price" else _parse_stock(value)
            except ImageRejected as exc:
                problems.append(exc.reason)
    return problems


def folder_items(root: Path) -> list[ImportItem]:
    """Every file under ``root``: category = first folder level, title from the file name. Links are followed
    only while they stay inside ``root``; one that leaves it is listed as a failure, never read."""
    resolved = root.resolve()
    items = []
    for folder, dirs, files in os.walk(root):  # never descends through a link to a folder
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in dirs:
            if (here / name).is_symlink() and _leaves(here / name, resolved):
                label = str((here / name).relative_to(root))
                items.append(ImportItem(path=here / name, label=label, title="",
                                        problem="a link to a folder outside the import folder"))  # fmt: skip
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or _is_hidden(path, root):
                continue
            rel = path.relative_to(root)
            category = rel.parts[0] if len(rel.parts) > 1 else ""
            item = ImportItem(path=path, label=str(rel), title=services.title_from_filename(path.name),
                              category=category.replace("_", " ").replace("-", " ").strip(), root=resolved)  # fmt: skip
            if _leaves(path, resolved):
                item.problem = "a link to a file outside the import folder"
            elif problems := _row_problems(item):
                item.problem = "; ".join(problems)
            items.append(item)
    return sorted(items, key=lambda item: item.label)


def manifest_items(root: Path, manifest: Path) -> list[ImportItem]:
    """Rows of a CSV manifest (``image,title,category[,description,price,sku,color]``)."""
    try:
        handle = manifest.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {manifest}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in MANIFEST_REQUIRED if c not in columns]
        if missing:
            raise ManifestError(
                f"manifest {manifest.name} lacks the column(s) {', '.join(missing)}; "
                f"expected {','.join(MANIFEST_REQUIRED)} and optionally {','.join(MANIFEST_OPTIONAL)}"
            )
        reader.fieldnames = columns
        items = []
        root_resolved = root.resolve()
        try:
            for line, row in enumerate(reader, start=2):
                values = {k: (v or "").strip() for k, v in row.items() if k is not None}
                rel = values.get("image", "")
                label = rel or f"{manifest.name}:{line}"
                item = ImportItem(
                    path=root / rel,
                    label=label,
                    title=values.get("title", ""),
                    category=values.get("category", ""),
                    description=values.get("description", ""),
                    price=values.get("price", ""),
                    sku=values.get("sku", ""),
                    color=values.get("color", ""),
                    stock=values.get("stock", ""),
                )
                item.root = root_resolved
                if problems := _row_problems(item):
                    item.problem = f"line {line}: " + "; ".join(problems)
                elif not rel:
                    item.problem = f"line {line}: the image column is empty"
                elif _leaves(root / rel, root_resolved):
                    item.problem = f"line {line}: the image path leaves the import folder"
                elif not (root / rel).is_file():
                    item.problem = f"line {line}: no such file"
                if not item.title:
                    item.title = services.title_from_filename(rel or "untitled")
                items.append(item)
        except csv.Error as exc:
            raise ManifestError(f"manifest {manifest.name} is not valid CSV: {exc}") from None
    return items


def _parse_price(raw: str) -> Decimal | None:
    if not raw:
        return None
    try:
        price = Decimal(raw.replace(",", "").lstrip("€$£ "))
    except InvalidOperation:
        raise ImageRejected(f"price {raw!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise ImageRejected(f"price {raw!r} is not a valid price")
    top, step = price_limits()
    if price > top:
        raise ImageRejected(f"price {raw!r} is more than {top}")
    return price.quantize(step)


def _parse_stock(raw: str) -> int:
    if not raw:
        return 0
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise ImageRejected(f"stock {raw!r} is not a whole number")
    return int(raw)


def import_item(item: ImportItem) -> FileOutcome:
    """Import one file in its own transaction; never raises for bad input."""
    if item.problem:
        return FileOutcome(name=item.label, status="failed", reason=item.problem)
    if item.path.suffix.lower() not in imaging.IMAGE_SUFFIXES:
        return FileOutcome(
            name=item.label, status="skipped", reason=f"not an image file type ({item.path.suffix or 'no extension'})"
        )
    try:
        if item.root is not None and _leaves(item.path, item.root):  # the link changed since it was listed
            raise ImageRejected("a link to a file outside the import folder")
        size = item.path.stat().st_size
        if size > settings.VITRINE_MAX_UPLOAD_BYTES:
            raise imaging.too_big(size, settings.VITRINE_MAX_UPLOAD_BYTES)
        data = item.path.read_bytes()
        existing = ProductImage.objects.select_related("product").filter(checksum=imaging.sha256(data)).first()
        if existing:  # the common case on a second run, answered before decoding anything
            raise DuplicateImage(existing)
        inspected = services.image_inspect(data)
        price = _parse_price(item.price)
        stock = _parse_stock(item.stock)
        with transaction.atomic():
            # Locks in a fixed order (checksum, SKU, categories): two imports of one folder or manifest wait
            # for each other here, then find what the other created.
            services.image_claim(checksum=inspected.checksum)
            product = services.product_sku_claim(sku=item.sku) if item.sku else None
            if product is None:
                category = services.category_from_path(path=item.category) if item.category else None
                product = services.product_create(
                    title=item.title,
                    category=category,
                    description=item.description,
                    price=price,
                    sku=item.sku or f"IMP-{inspected.checksum[:12].upper()}",
                    color=item.color,
                    stock=stock,
                )
            image = services.product_image_add(product=product, file=inspected)
        return FileOutcome(name=item.label, status="imported", product=product, image=image)
    except DuplicateImage as exc:
        return FileOutcome(name=item.label, status="skipped", reason=str(exc), product=exc.existing.product)
    except ImageRejected as exc:
        return FileOutcome(name=item.label, status="failed", reason=exc.reason)
    except OSError as exc:
        return FileOutcome(name=item.label, status="failed", reason=f"cannot read the file ({exc.strerror or exc})")
    except (ValidationError, DatabaseError) as exc:  # what the row checks missed: this row fails, the import goes on
        logger.exception("import: %s could not be saved", item.label)
        reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
        return FileOutcome(name=item.label, status="failed", reason=f"could not be saved ({reason})")


def images_import(
    *,
    root: Path,
    manifest: Path | None = None,
    progress: Callable[[Iterator[ImportItem], int], Iterator[ImportItem]] | None = None,
) -> ImportReport:
    """Import a folder tree or a manifest. Idempotent: images already present (by SHA-256) are skipped."""
    if not root.is_dir():
        raise ManifestError(f"{root} is not a folder")
    items = manifest_items(root, manifest) if manifest else folder_items(root)
    iterator: Iterator[ImportItem] = iter(items)
    if progress is not None:
        iterator = progress(iterator, len(items))
    report = ImportReport()
    for item in iterator:
        outcome = import_item(item)
        if outcome.status == "failed":
            logger.warning("import: %s failed: %s", outcome.name, outcome.reason)
        report.outcomes.append(outcome)
    return report
