"""Writes to the catalogue. Every way a product or image enters the shop goes through here."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Literal

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils.text import slugify

from catalog import imaging, signals
from catalog.imaging import ImageRejected
from catalog.models import Category, Product, ProductImage

logger = logging.getLogger(__name__)

__all__ = [
    "DuplicateImage",
    "FileOutcome",
    "ImageRejected",
    "categories_delete",
    "category_from_path",
    "category_get_or_create",
    "category_saved",
    "product_add_uploads",
    "product_create",
    "product_delete",
    "product_image_add",
    "product_image_delete",
    "product_image_set_primary",
    "product_saved",
    "products_create_from_uploads",
    "products_update",
    "title_from_filename",
]


class DuplicateImage(Exception):
    """The exact same image (by SHA-256) is already in the catalogue."""

    def __init__(self, existing: ProductImage) -> None:
        super().__init__(f"already in the catalogue as an image of “{existing.product.title}”")
        self.existing = existing


@dataclass
class FileOutcome:
    """What happened to one incoming file, for upload pages and import reports."""

    name: str
    status: Literal["imported", "skipped", "failed"]
    reason: str = ""
    product: Product | None = None
    image: ProductImage | None = None


# --- categories --------------------------------------------------------------------


def _unique_slug(model: type[Category] | type[Product], base: str, *, max_length: int, fallback: str) -> str:
    base = (slugify(base) or fallback)[: max_length - 9].strip("-") or fallback
    slug = base
    while model.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def category_get_or_create(*, name: str, parent: Category | None = None) -> Category:
    """The child of ``parent`` called ``name`` (case-insensitive), created if missing."""
    name = " ".join(name.split())
    if not name:
        raise ValueError("a category needs a name")
    existing = Category.objects.filter(parent=parent, name__iexact=name).first()
    if existing:
        return existing
    slug_base = f"{parent.slug}-{name}" if parent and Category.objects.filter(slug=slugify(name)).exists() else name
    category = Category(
        name=name, parent=parent, slug=_unique_slug(Category, slug_base, max_length=120, fallback="category")
    )
    category.save()
    return category


def category_from_path(*, path: str | Sequence[str]) -> Category | None:
    """Resolve "Clothing/Shirts" (or ``["Clothing", "Shirts"]``), creating missing levels."""
    parts = re.split(r"\s*[/>]\s*", path) if isinstance(path, str) else list(path)
    parts = [p for p in (" ".join(part.split()) for part in parts) if p]
    parent: Category | None = None
    for part in parts:
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
        slug=_unique_slug(Product, title, max_length=280, fallback="product"),
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
    product.save()
    signals.product_text_changed.send(sender=Product, product_ids=[product.pk])
    return product


def product_saved(*, product: Product, created: bool, changed_fields: Iterable[str] = ()) -> None:
    """Announce a product saved elsewhere (the admin's form): its text and its listing fields."""
    changed = set(changed_fields)
    if not created:
        signals.products_changed.send(sender=Product, product_ids=[product.pk])
    if created or {"title", "description"} & changed:
        signals.product_text_changed.send(sender=Product, product_ids=[product.pk])


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


def _read(file: bytes | File) -> bytes:
    if isinstance(file, bytes):
        return file
    size = getattr(file, "size", None)
    limit = settings.VITRINE_MAX_UPLOAD_BYTES
    if size is not None and size > limit:
        raise ImageRejected(f"the file is {size / 1_048_576:.1f} MB; the limit is {limit / 1_048_576:.0f} MB")
    file.seek(0)
    return file.read(limit + 1)


def image_inspect(file: bytes | File) -> imaging.InspectedImage:
    """Validate an incoming file with the shop's limits (raises :class:`ImageRejected`)."""
    return imaging.inspect(
        _read(file), max_pixels=settings.VITRINE_MAX_IMAGE_PIXELS, max_bytes=settings.VITRINE_MAX_UPLOAD_BYTES
    )


def _store(name: str, data: bytes) -> str:
    if default_storage.exists(name):
        # Same content hash, same bytes: a leftover of an earlier failed attempt.
        default_storage.delete(name)
    return default_storage.save(name, ContentFile(data))


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
    """
    inspected = file if isinstance(file, imaging.InspectedImage) else image_inspect(file)
    existing = ProductImage.objects.select_related("product").filter(checksum=inspected.checksum).first()
    if existing:
        raise DuplicateImage(existing)

    clean, extension = imaging.reencode(inspected.decoded or inspected.rgb)
    names = ProductImage.storage_names(inspected.checksum, extension)
    stored: list[str] = []
    try:
        stored.append(_store(names["file"], clean))
        stored.append(
            _store(names["thumbnail"], imaging.derivative_jpeg(inspected.rgb, max_side=settings.VITRINE_THUMBNAIL_SIZE))
        )
        stored.append(
            _store(names["display"], imaging.derivative_jpeg(inspected.rgb, max_side=settings.VITRINE_DISPLAY_SIZE))
        )
        with transaction.atomic():
            siblings = ProductImage.objects.select_for_update().filter(product=product)
            has_primary = siblings.filter(is_primary=True).exists()
            make_primary = primary if primary is not None else not has_primary
            if make_primary and has_primary:
                siblings.filter(is_primary=True).update(is_primary=False)
            position = (siblings.aggregate(m=Max("position"))["m"] or 0) + (1 if siblings.exists() else 0)
            image = ProductImage.objects.create(
                product=product,
                file=stored[0],
                thumbnail=stored[1],
                display=stored[2],
                checksum=inspected.checksum,
                format=inspected.format,
                width=inspected.width,
                height=inspected.height,
                alt=alt.strip()[:255],
                position=position,
                is_primary=make_primary,
            )
    except IntegrityError:
        for name in stored:
            default_storage.delete(name)
        existing = ProductImage.objects.select_related("product").filter(checksum=inspected.checksum).first()
        if existing:  # lost a race with a concurrent upload of the same file
            raise DuplicateImage(existing) from None
        raise
    except BaseException:
        for name in stored:
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


def _delete_files(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)


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
        # Files go only once the rows are gone for good.
        transaction.on_commit(lambda: _delete_files(names))


def product_delete(*, product: Product) -> None:
    """Delete a product, its images and their files."""
    names = _file_names(product.images.all())
    product_id = product.pk
    with transaction.atomic():
        product.delete()
        signals.products_changed.send(sender=Product, product_ids=[product_id])
        transaction.on_commit(lambda: _delete_files(names))


# --- bulk uploads (staff upload page) ----------------------------------------------------


def _outcome_for(name: str, exc: Exception) -> FileOutcome:
    if isinstance(exc, DuplicateImage):
        return FileOutcome(name=name, status="skipped", reason=str(exc), product=exc.existing.product)
    if isinstance(exc, ImageRejected):
        return FileOutcome(name=name, status="failed", reason=exc.reason)
    raise exc


def products_create_from_uploads(
    *,
    files: Iterable[File],
    category: Category | None = None,
    price: Decimal | None = None,
    stock: int = 0,
    is_active: bool = True,
) -> list[FileOutcome]:
    """One new product per image, titled from the file name. Bad files are reported, not fatal."""
    outcomes = []
    for upload in files:
        name = getattr(upload, "name", "upload")
        try:
            inspected = image_inspect(upload)
            with transaction.atomic():
                product = product_create(
                    title=title_from_filename(name), category=category, price=price, stock=stock, is_active=is_active
                )
                image = product_image_add(product=product, file=inspected)
            outcomes.append(FileOutcome(name=name, status="imported", product=product, image=image))
        except (ImageRejected, DuplicateImage) as exc:
            outcomes.append(_outcome_for(name, exc))
    return outcomes


def product_add_uploads(*, product: Product, files: Iterable[File]) -> list[FileOutcome]:
    """Attach every good image to ``product``. Bad files are reported, not fatal."""
    outcomes = []
    for upload in files:
        name = getattr(upload, "name", "upload")
        try:
            image = product_image_add(product=product, file=upload)
            outcomes.append(FileOutcome(name=name, status="imported", product=product, image=image))
        except (ImageRejected, DuplicateImage) as exc:
            outcomes.append(_outcome_for(name, exc))
    return outcomes
