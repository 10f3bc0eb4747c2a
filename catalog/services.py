"""Writes to the catalogue. Every way a product or image enters the shop goes through here."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils.text import slugify

from catalog import imaging, locks, media, signals
from catalog.imaging import ImageRejected
from catalog.models import Category, Product, ProductImage

logger = logging.getLogger(__name__)

__all__ = [
    "DuplicateImage",
    "ImageRejected",
    "categories_delete",
    "category_from_path",
    "category_get_or_create",
    "category_levels",
    "category_saved",
    "image_claim",
    "image_copies",
    "image_inspect",
    "images_lock",
    "product_create",
    "product_delete",
    "product_image_add",
    "product_image_delete",
    "product_image_set_primary",
    "product_saved",
    "product_sku_claim",
    "products_update",
    "query_image_inspect",
    "title_from_filename",
    "upload_checksum",
]


class DuplicateImage(Exception):
    """The exact same image (by SHA-256) is already in the catalogue."""

    def __init__(self, existing: ProductImage) -> None:
        super().__init__(f"already in the catalogue as an image of “{existing.product.title}”")
        self.existing = existing


# --- categories --------------------------------------------------------------------


def _violates(exc: IntegrityError, *columns: str) -> bool:
    """Whether ``exc`` is a unique violation on a constraint over one of ``columns``."""
    constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) or ""
    return any(column in constraint for column in columns)


def _save_with_unique_slug(obj: Category | Product, base: str, *, fallback: str) -> None:
    """Save the new ``obj`` under ``base``'s slug, or a free variant of it with a random suffix.

    Looking first keeps slugs clean; the unique index decides under concurrency: a save that loses the race
    for a slug is rolled back to its savepoint and tried again with a suffix, never an IntegrityError (500)."""
    max_length = int(getattr(type(obj)._meta.get_field("slug"), "max_length", 50) or 50)
    base = (slugify(base) or fallback)[: max_length - 9].strip("-") or fallback
    slug = base
    for _ in range(10):
        if not type(obj).objects.filter(slug=slug).exists():
            obj.slug = slug
            try:
                with transaction.atomic():
                    obj.save()
                return
            except IntegrityError as exc:
                if not _violates(exc, "slug", "path"):
                    raise
        slug = f"{base}-{secrets.token_hex(3)}"
    raise IntegrityError(f"no free slug for {base!r} after 10 tries")


def category_get_or_create(*, name: str, parent: Category | None = None) -> Category:
    """The child of ``parent`` called ``name`` (case-insensitive), created if missing.

    Race-free: the name is locked under its parent until the transaction ends, so a concurrent caller waits
    and then finds this category instead of creating a second one."""
    name = " ".join(name.split())
    if not name:
        raise ValueError("a category needs a name")
    with transaction.atomic():
        locks.xact_lock(kind=locks.Kind.CATEGORY, keys=[f"{parent.pk if parent else ''}/{name.lower()}"])
        existing = Category.objects.filter(parent=parent, name__iexact=name).first()
        if existing:
            return existing
        taken = parent is not None and Category.objects.filter(slug=slugify(name)).exists()
        category = Category(name=name, parent=parent)
        _save_with_unique_slug(category, f"{parent.slug}-{name}" if parent and taken else name, fallback="category")
    return category


def category_levels(path: str | Sequence[str]) -> list[str]:
    """The names in "Clothing/Shirts" (or "Clothing > Shirts", or ``["Clothing", "Shirts"]``), whitespace tidied."""
    parts = re.split(r"\s*[/>]\s*", path) if isinstance(path, str) else list(path)
    return [p for p in (" ".join(part.split()) for part in parts) if p]


def category_from_path(*, path: str | Sequence[str]) -> Category | None:
    """Resolve "Clothing/Shirts" (or ``["Clothing", "Shirts"]``), creating missing levels."""
    parent: Category | None = None
    for part in category_levels(path):
        parent = category_get_or_create(name=part, parent=parent)
    return parent


# --- products ------------------------------------------------------------------------


def title_from_filename(name: str) -> str:
    """ "red_summer-dress_02.jpg" -> "Red summer dress 02"."""
    stem = PurePath(name).stem
    words = re.sub(r"[_\-.+]+", " ", stem).split()
    title = " ".join(words)
    return (title[:1].upper() + title[1:]) if title else "Untitled product"


def sku_new() -> str:
    """A fresh SKU for a product that came without one (upload page, import, admin)."""
    return f"VT-{secrets.token_hex(5).upper()}"


def product_create(
    *,
    title: str,
    category: Category | None = None,
    description: str = "",
    price: Decimal | None = None,
    currency: str | None = None,
    sku: str | None = None,
    stock: int = 0,
    color: str = "",
    attributes: dict[str, Any] | None = None,
    is_active: bool = True,
) -> Product:
    """Create a product with a unique slug (and a generated SKU when none is given)."""
    title = " ".join(title.split())[:255] or "Untitled product"
    if price is not None and price < 0:
        raise ValueError("price cannot be negative")
    sku = (sku or "").strip() or sku_new()
    product = Product(
        title=title,
        description=description.strip(),
        category=category,
        price=price,
        currency=str(currency or settings.VITRINE_CURRENCY).upper(),
        sku=sku,
        stock=stock,
        color=color.strip().lower(),
        attributes=attributes or {},
        is_active=is_active,
    )
    product.full_clean(exclude=["slug"])
    _save_with_unique_slug(product, title, fallback="product")
    signals.product_text_changed.send(sender=Product, product_ids=[product.pk])
    return product


def product_saved(*, product: Product, created: bool, changed_fields: Iterable[str] = ()) -> None:
    """Announce a product saved elsewhere (the admin's form): its text and its listing fields."""
    changed = set(changed_fields)
    if not created:
        signals.products_changed.send(sender=Product, product_ids=[product.pk])
    if created or {"title", "description"} & changed:
        signals.product_text_changed.send(sender=Product, product_ids=[product.pk])


def product_sku_claim(*, sku: str) -> Product | None:
    """Lock ``sku`` until the transaction ends and return its product, if there is one: a concurrent import
    of the same SKU waits, then finds the product this transaction creates instead of a unique violation."""
    locks.xact_lock(kind=locks.Kind.SKU, keys=[sku])
    return Product.objects.filter(sku=sku).first()


def products_update(*, product_ids: Sequence[int], **fields: Any) -> int:
    """Set listing fields (``is_active``, ``stock``…) on many products at once; returns how many changed."""
    ids = list(product_ids)
    with transaction.atomic():
        n = Product.objects.filter(pk__in=ids).update(**fields)
        signals.products_changed.send(sender=Product, product_ids=ids)
    return n


def category_saved(*, category: Category, changed_fields: Iterable[str]) -> None:
    """Announce a category renamed or moved (its products' category path changed)."""
    if {"name", "slug", "parent"} & set(changed_fields):
        signals.category_changed.send(sender=Category, category_path=category.path)


def categories_delete(*, category_ids: Sequence[int]) -> None:
    """Delete categories; their products lose the category (SET NULL), and say so."""
    categories = Category.objects.filter(pk__in=list(category_ids))
    affected = Product.objects.none()
    for path in categories.values_list("path", flat=True):
        affected |= Product.objects.filter(Q(category__path=path) | Q(category__path__startswith=path + "/"))
    with transaction.atomic():
        ids = list(affected.values_list("pk", flat=True))
        categories.delete()
        signals.products_changed.send(sender=Product, product_ids=ids)


# --- images ----------------------------------------------------------------------------


# A photo query is shrunk to this many pixels on its short side: every model sees 224 or fewer.
QUERY_DECODE_SIDE = 512


def _read(file: bytes | File, limit: int) -> bytes:
    if isinstance(file, bytes):
        return file
    size = getattr(file, "size", None)
    if size is not None and size > limit:
        raise imaging.too_big(size, limit)
    file.seek(0)
    return file.read(limit + 1)


def image_inspect(file: bytes | File) -> imaging.InspectedImage:
    """Validate an incoming file with the shop's limits (raises :class:`ImageRejected`)."""
    limit = settings.VITRINE_MAX_UPLOAD_BYTES
    return imaging.inspect(_read(file, limit), max_pixels=settings.VITRINE_MAX_IMAGE_PIXELS, max_bytes=limit,
                           max_scans=settings.VITRINE_MAX_JPEG_SCANS)  # fmt: skip


def query_image_inspect(file: bytes | File) -> imaging.InspectedImage:
    """Validate a shopper's photo query (raises :class:`ImageRejected`): anyone may send one, so its limits
    are far tighter than staff uploads' (``VITRINE_PHOTO_MAX_BYTES``, ``VITRINE_PHOTO_MAX_PIXELS``, a decode
    budget of ``VITRINE_PHOTO_DECODE_BUDGET_S``), and it is decoded only as large as a model needs."""
    limit = settings.VITRINE_PHOTO_MAX_BYTES
    return imaging.inspect(
        _read(file, limit),
        max_pixels=settings.VITRINE_PHOTO_MAX_PIXELS,
        max_bytes=limit,
        max_scans=settings.VITRINE_MAX_JPEG_SCANS,
        decode_side=QUERY_DECODE_SIDE,
        budget_s=settings.VITRINE_PHOTO_DECODE_BUDGET_S,
    )


def image_copies(inspected: imaging.InspectedImage) -> imaging.StoredCopies:
    """Encode what the shop stores of a validated image (raises :class:`ImageRejected` when it cannot be)."""
    return imaging.stored_copies(
        inspected, thumbnail_side=settings.VITRINE_THUMBNAIL_SIZE, display_side=settings.VITRINE_DISPLAY_SIZE
    )


def image_claim(*, checksum: str) -> None:
    """Lock an image's checksum until the transaction ends, and refuse it if it is in the catalogue already.

    From here to the commit no other request adds this image or writes or deletes its content-addressed
    files; one that tries waits, then finds this image (``DuplicateImage``)."""
    locks.xact_lock(kind=locks.Kind.CHECKSUM, keys=[checksum])
    existing = ProductImage.objects.select_related("product").filter(checksum=checksum).first()
    if existing:
        raise DuplicateImage(existing)


def images_lock(*, checksums: Iterable[str]) -> None:
    """Lock several images' checksums at once, in order, before adding them in one transaction: two uploads
    of the same files in another order then wait for each other instead of deadlocking."""
    locks.xact_lock(kind=locks.Kind.CHECKSUM, keys=checksums)


def upload_checksum(file: bytes | File) -> str:
    """SHA-256 of an upload's bytes, read in chunks."""
    if isinstance(file, bytes):
        return imaging.sha256(file)
    digest = hashlib.sha256()
    file.seek(0)
    for chunk in file.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def product_image_add(
    *,
    product: Product,
    file: bytes | File | imaging.InspectedImage,
    alt: str = "",
    primary: bool | None = None,
) -> ProductImage:
    """Validate, store (original + thumbnail + display rendering) and attach an image.

    The first image of a product becomes its primary image unless ``primary``
    says otherwise. Raises :class:`ImageRejected` for files the shop refuses and
    :class:`DuplicateImage` when the same bytes are already in the catalogue.
    Files are written and the row created under the checksum's lock (:func:`image_claim`); if this call
    fails, it deletes only the files it wrote itself, which no row can reference.
    """
    inspected = file if isinstance(file, imaging.InspectedImage) else image_inspect(file)
    copies = image_copies(inspected)  # the slow part, before any lock is taken
    names = ProductImage.storage_names(inspected.checksum, copies.extension)
    with transaction.atomic():
        image_claim(checksum=inspected.checksum)
        written: list[str] = []
        try:
            for key, data in (("file", copies.original), ("thumbnail", copies.thumbnail), ("display", copies.display)):
                if media.media_file_store(name=names[key], data=data):
                    written.append(names[key])
            siblings = ProductImage.objects.select_for_update().filter(product=product)
            has_primary = siblings.filter(is_primary=True).exists()
            make_primary = primary if primary is not None else not has_primary
            if make_primary and has_primary:
                siblings.filter(is_primary=True).update(is_primary=False)
            position = (siblings.aggregate(m=Max("position"))["m"] or 0) + (1 if siblings.exists() else 0)
            image = ProductImage.objects.create(
                product=product,
                file=names["file"],
                thumbnail=names["thumbnail"],
                display=names["display"],
                checksum=inspected.checksum,
                format=inspected.format,
                width=inspected.width,
                height=inspected.height,
                alt=alt.strip()[:255],
                position=position,
                is_primary=make_primary,
            )
        except BaseException:
            for name in written:
                default_storage.delete(name)
            raise
        signals.image_added.send(sender=ProductImage, image_id=image.pk, product_id=product.pk)
    return image


@transaction.atomic
def product_image_set_primary(*, image: ProductImage) -> None:
    """Make ``image`` its product's primary image."""
    ProductImage.objects.select_for_update().filter(product_id=image.product_id, is_primary=True).exclude(
        pk=image.pk
    ).update(is_primary=False)
    ProductImage.objects.filter(pk=image.pk).update(is_primary=True)
    image.is_primary = True


def _file_names(images: Iterable[ProductImage]) -> list[str]:
    return [f.name for image in images for f in (image.file, image.thumbnail, image.display) if f and f.name]


def product_image_delete(*, image: ProductImage) -> None:
    """Delete an image and its files; promote the next image to primary if needed."""
    product_id, was_primary = image.product_id, image.is_primary
    names = _file_names([image])
    with transaction.atomic():
        image.delete()
        signals.products_changed.send(sender=Product, product_ids=[product_id])
        if was_primary:
            successor = ProductImage.objects.filter(product_id=product_id).order_by("position", "id").first()
            if successor:
                product_image_set_primary(image=successor)
        # Files go only once the rows are gone for good, and only if no row (a new upload of the same
        # bytes, say) references them by then.
        transaction.on_commit(lambda: media.media_files_delete_unreferenced(names=names))


def product_delete(*, product: Product) -> None:
    """Delete a product, its images and their files."""
    names = _file_names(product.images.all())
    product_id = product.pk
    with transaction.atomic():
        product.delete()
        signals.products_changed.send(sender=Product, product_ids=[product_id])
        transaction.on_commit(lambda: media.media_files_delete_unreferenced(names=names))


def product_images_move(*, source: Product, target: Product, deactivate_source: bool = True) -> int:
    """Move every image of ``source`` onto ``target`` (after its own, never as its primary unless it has none),
    and hide ``source`` from shoppers: merging two listings of one product. Nothing is deleted, so a mistaken
    merge can be undone by hand. Returns how many images moved."""
    if source.pk == target.pk:
        return 0
    with transaction.atomic():
        # Both products' image rows, locked in id order: two merges of the same pair wait for each other.
        rows = list(ProductImage.objects.select_for_update().filter(product__in=[source, target]).order_by("pk"))
        moving = [row for row in rows if row.product_id == source.pk]
        kept = [row for row in rows if row.product_id == target.pk]
        position = max((row.position for row in kept), default=-1) + 1
        has_primary = any(row.is_primary for row in kept)
        for offset, row in enumerate(moving):
            row.product = target
            row.position = position + offset
            row.is_primary = not has_primary and offset == 0
        ProductImage.objects.bulk_update(moving, ["product", "position", "is_primary"])
        if deactivate_source:
            Product.objects.filter(pk=source.pk).update(is_active=False)
        signals.products_changed.send(sender=Product, product_ids=[source.pk, target.pk])
    return len(moving)
