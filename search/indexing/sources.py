"""What a space turns into vectors: an image's pixels (decoded from storage), a product's text.

Shared by embedding one item, bulk jobs and the counts, so they all agree on what "the same source" is.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.files.storage import default_storage

from catalog import imaging
from catalog.models import Product, ProductImage
from search.embedders import Embedder


class ImageUnreadable(Exception):
    """The stored file is missing or cannot be decoded: retrying will not help."""


def load_image_rgb(image: ProductImage, embedder: Embedder | None = None) -> Any:
    """Decode a stored original to normalised RGB, or raise :class:`ImageUnreadable`.

    For ``embedder``, JPEGs decode at the smallest scale its preprocessing needs (draft mode);
    without one, at least 448 px on the short side.
    """
    long_side, short_side = embedder.decode_sides() if embedder is not None else (0, 448)
    try:
        with default_storage.open(str(image.file.name), "rb") as fh:
            data = fh.read()
        return imaging.open_rgb(data, long_side=long_side, short_side=short_side)
    except FileNotFoundError:
        raise ImageUnreadable(f"the file {image.file.name} is missing from storage") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageUnreadable(f"the stored file cannot be decoded: {exc}") from None


def product_text(product: Product) -> str:
    """Title, category name and description: a short title alone ("Red ball") is a confident wrong match for
    many queries; the category gives it the context a shopper sees."""
    category = product.category.name if product.category_id and product.category else ""
    return "\n".join(part for part in (product.title, category, product.description) if part).strip()


def product_text_hash(text: str) -> str:
    """What a product's text vector records as its source: it is stale when the text hashes otherwise."""
    return hashlib.sha256(text.encode()).hexdigest()
