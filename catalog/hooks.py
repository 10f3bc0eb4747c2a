"""Places on catalogue pages where other apps add their own parts, registered from their ``AppConfig.ready()``.

The product page asks for its panels here instead of loading another app's template tags, so the catalogue
renders (and is tested) without those apps installed. ``search`` registers "Looks similar", and a column of the
admin's image table (each image's state in every embedding space).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from django.http import HttpRequest
from django.utils.safestring import SafeString, mark_safe

from catalog.models import Product, ProductImage

logger = logging.getLogger(__name__)

# A panel renders itself (with its own template) for one product page; "" when it has nothing to show.
ProductPanel = Callable[[HttpRequest, Product], str]

_product_panels: dict[str, ProductPanel] = {}


def product_panel_register(*, name: str, panel: ProductPanel) -> None:
    """Add a panel below the product's details; registering a name again replaces it (app reloads, tests)."""
    _product_panels[name] = panel


def product_panels(*, request: HttpRequest, product: Product) -> list[SafeString]:
    """The rendered panels for a product page, in registration order."""
    rendered = (panel(request, product) for panel in _product_panels.values())
    return [mark_safe(html) for html in rendered if html]


# A column of the product admin's image table: the image in, safe HTML out; ``short_description`` is its title.
ImageColumn = Callable[[ProductImage], str]

_image_columns: dict[str, ImageColumn] = {}


def image_admin_column_register(*, name: str, column: ImageColumn) -> None:
    """Add a read-only column to the images on a product's admin page; registering a name again replaces it."""
    _image_columns[name] = column


def image_admin_columns() -> list[ImageColumn]:
    """The registered image columns, in registration order."""
    return list(_image_columns.values())


@dataclass(frozen=True)
class UploadNote:
    """Something another app noticed about a newly added picture, shown beside it on the upload page and in
    ``import_images``'s summary: "looks like existing product X", "suggested category: Y"."""

    kind: str  # "lookalike", "category", "colour"
    text: str  # plain text, for the page and the command's summary
    url: str = ""  # where to look (the other product's page)
    accept_url: str = ""  # a staff POST that applies the suggestion in one click
    value: str = ""  # what accepting applies (a category path, a colour)
    confidence: float | None = None


# Given newly added pictures, notes about some of them by image id.
UploadAssistant = Callable[[Sequence[ProductImage]], dict[int, list[UploadNote]]]

_upload_assistants: dict[str, UploadAssistant] = {}


def upload_assistant_register(*, name: str, assistant: UploadAssistant) -> None:
    """Add an assistant to uploads and imports; registering a name again replaces it."""
    _upload_assistants[name] = assistant


def upload_notes(
    *, images: Sequence[ProductImage], names: Collection[str] | None = None
) -> dict[int, list[UploadNote]]:
    """The registered assistants' notes (``names``: only these) about these pictures, by image id. An assistant
    that fails is logged and left out: the upload itself has already succeeded."""
    notes: dict[int, list[UploadNote]] = {}
    if not images:
        return notes
    for name, assistant in _upload_assistants.items():
        if names is not None and name not in names:
            continue
        try:
            found = assistant(images)
        except Exception:
            logger.exception("upload assistant %s failed; its notes are left out", name)
            continue
        for image_id, items in found.items():
            notes.setdefault(image_id, []).extend(items)
    return notes
