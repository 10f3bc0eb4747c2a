"""Pictures' dominant colours, stored when the worker embeds them (one computation per picture and palette
version, whichever image space gets there first), and mirrored into vector stores that filter on their own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.db.models import Q
from PIL import Image

from catalog.models import ProductImage
from search.colours import PALETTE_VERSION, image_colours
from search.models import ImageColour
from search.vectorstores import get_store

Colours = list[tuple[str, float]]


def images_without_colours(*, image_ids: Iterable[int]) -> set[int]:
    """Which of these pictures have no colours from the current palette yet."""
    ids = set(image_ids)
    done = ImageColour.objects.filter(image_id__in=ids, palette_version=PALETTE_VERSION)
    return ids - set(done.values_list("image_id", flat=True))


def image_colours_compute(*, image: Image.Image) -> Colours:
    """The picture's dominant colours (see :func:`search.colours.image_colours`)."""
    return image_colours(image)


def image_colours_save(*, colours: Mapping[int, Colours]) -> None:
    """Store computed colours (idempotent), then bring a mirroring vector store's copy of their products
    up to date, so its colour filter agrees with Postgres'."""
    if not colours:
        return
    existing = set(ProductImage.objects.filter(pk__in=list(colours)).values_list("pk", flat=True))
    rows = [ImageColour(image_id=pk, names=[n for n, _ in found], shares=[s for _, s in found],
                        palette_version=PALETTE_VERSION)
            for pk, found in colours.items() if pk in existing]  # fmt: skip
    ImageColour.objects.bulk_create(rows, update_conflicts=True, unique_fields=["image"],
                                    update_fields=["names", "shares", "palette_version", "computed_at"])  # fmt: skip
    store = get_store()
    if store.mirrors_catalog:
        products = ProductImage.objects.filter(pk__in=[row.image_id for row in rows])
        store.products_sync(product_ids=sorted(set(products.values_list("product_id", flat=True))))


def images_colour_backlog(*, limit: int = 10_000) -> list[int]:
    """Pictures without colours of the current palette (older uploads, a palette change), oldest first."""
    stale = Q(colours__isnull=True) | ~Q(colours__palette_version=PALETTE_VERSION)
    return list(ProductImage.objects.filter(stale).order_by("pk").values_list("pk", flat=True)[:limit])


def images_colours_fill(*, image_ids: Iterable[int] | None = None, batch: int = 200) -> int:
    """Compute missing colours for these pictures (default: the whole backlog) outside any embedding run:
    catalogues indexed before colours existed, or after a palette change. Returns how many were stored."""
    from search.indexing.sources import ImageUnreadable, load_image_rgb

    ids = sorted(images_without_colours(image_ids=image_ids)) if image_ids is not None else None
    done = 0
    while True:
        todo = ids[:batch] if ids is not None else images_colour_backlog(limit=batch)
        if ids is not None:
            ids = ids[batch:]
        if not todo:
            return done
        found: dict[int, Colours] = {}
        for image in ProductImage.objects.filter(pk__in=todo).only("id", "file"):
            try:
                found[image.pk] = image_colours_compute(image=load_image_rgb(image))
            except ImageUnreadable:
                found[image.pk] = []  # recorded as colourless, so the backlog does not return to it
        image_colours_save(colours=found)
        done += len(found)
