"""Search by photo, and warming the query models of a web process."""

from __future__ import annotations

import base64
import io
import logging

from django.conf import settings
from PIL import Image

from search import embedders
from search.querying.similar import ProductHit, image_space_version, similar_to_vector
from search.vectorstores import Filters

logger = logging.getLogger(__name__)


def photo_search(*, image: Image.Image, k: int = 24, filters: Filters | None = None,
                 space: str | None = None) -> tuple[list[ProductHit], str]:  # fmt: skip
    """Products whose images look like ``image`` (already validated, RGB). Returns (hits, space used)."""
    version = image_space_version(space)
    space = version.space
    embedder = embedders.load(space)  # warm after the first request in this process
    vector = embedder.embed_images([image])[0]
    return similar_to_vector(vector=vector, space=space, version=version, k=k, filters=filters), space


PREVIEW_SIDE = 640


def photo_preview(*, image: Image.Image, side: int = PREVIEW_SIDE) -> str:
    """The shopper's photo, shown back above the results without keeping it anywhere: a JPEG ``data:`` URL of at
    most ``side`` pixels a side (enough to see it, and to pick a part of it to search by)."""
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def preload_query_models() -> list[str]:
    """Load the models this process will use for text and photo queries; returns the spaces loaded."""
    loaded: list[str] = []
    keys: list[str] = [key for key in ("clip", "text") if key in settings.VITRINE_ENABLED_SPACES]
    try:
        keys.append(image_space_version().space)
    except Exception as exc:
        logger.debug("no primary image space to preload yet: %s", exc)
    for key in dict.fromkeys(keys):
        try:
            embedders.load(key)
            loaded.append(key)
        except embedders.SpaceUnavailable as exc:
            # The admin and `prepare_models` say why; every web worker repeating it is noise.
            logger.debug("query model for %s not preloaded: %s", key, exc.reason)
    return loaded
