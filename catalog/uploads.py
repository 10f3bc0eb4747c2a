"""The staff upload page's bulk work: many files in one request, each with its own outcome.

One bad file never costs the others: each is added in its own savepoint and reported with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from django.core.files.base import File
from django.db import transaction

from catalog.models import Category, Product, ProductImage
from catalog.services import (
    DuplicateImage,
    ImageRejected,
    image_claim,
    image_inspect,
    images_lock,
    product_create,
    product_image_add,
    title_from_filename,
    upload_checksum,
)

logger = logging.getLogger(__name__)


@dataclass
class FileOutcome:
    """What happened to one incoming file, for upload pages and import reports."""

    name: str
    status: Literal["imported", "skipped", "failed"]
    reason: str = ""
    product: Product | None = None
    image: ProductImage | None = None


def _outcome_for(name: str, exc: Exception) -> FileOutcome:
    if isinstance(exc, DuplicateImage):
        return FileOutcome(name=name, status="skipped", reason=str(exc), product=exc.existing.product)
    if isinstance(exc, ImageRejected):
        return FileOutcome(name=name, status="failed", reason=exc.reason)
    # A bug or an outage while storing this one file: it is reported, the others go on (their savepoints).
    logger.exception("upload of %s failed", name)
    return FileOutcome(name=name, status="failed", reason=f"could not be stored ({type(exc).__name__}; logged)")


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
                image_claim(checksum=inspected.checksum)  # a duplicate creates no product
                product = product_create(
                    title=title_from_filename(name), category=category, price=price, stock=stock, is_active=is_active
                )
                image = product_image_add(product=product, file=inspected)
            outcomes.append(FileOutcome(name=name, status="imported", product=product, image=image))
        except Exception as exc:
            outcomes.append(_outcome_for(name, exc))
    return outcomes


def product_add_uploads(
    *,
    files: Iterable[File],
    product: Product | None = None,
    title: str = "",
    category: Category | None = None,
    price: Decimal | None = None,
    stock: int = 0,
) -> tuple[Product | None, list[FileOutcome]]:
    """Attach every good image to ``product``, or to a new product called ``title``, created only if at least
    one image arrives. Bad files are reported, not fatal. Returns (the product, or None, and the outcomes)."""
    files = list(files)
    outcomes = []
    with transaction.atomic():
        images_lock(checksums=[upload_checksum(upload) for upload in files])  # before any row is written
        target = product or product_create(title=title, category=category, price=price, stock=stock)
        for upload in files:
            name = getattr(upload, "name", "upload")
            try:
                with transaction.atomic():
                    image = product_image_add(product=target, file=upload)
                outcomes.append(FileOutcome(name=name, status="imported", product=target, image=image))
            except Exception as exc:
                outcomes.append(_outcome_for(name, exc))
        if product is None and not any(o.status == "imported" for o in outcomes):
            transaction.set_rollback(True)  # nothing usable arrived: no empty product left behind
            return None, outcomes
    return target, outcomes
