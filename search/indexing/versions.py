"""Embedding spaces in the database: whether each is available, its versions, and how complete they are.

A space loads in a process (:func:`space_load`), which records its state for the admin and registers the
model version it computes. A new version is built beside the active one and activated when every item has a
vector or a recorded failure in it (:func:`version_activate_if_complete`), so search never mixes two models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from catalog.models import Product, ProductImage
from search import embedders
from search.embedders import Embedder, SpaceUnavailable
from search.indexing.sources import product_text, product_text_hash
from search.models import EmbeddingStatus, ImageEmbedding, ProductEmbedding, SpaceState, SpaceVersion
from search.querying.active import active_forget
from search.vectorstores import get_store

logger = logging.getLogger(__name__)


# What this process last wrote to SpaceState per space, and when: the worker calls space_load for
# every task, and the row only needs writing when the answer changes or has grown old.
_recorded_states: dict[str, tuple[tuple[bool, str, str], float]] = {}
STATE_REFRESH_S = 60.0


def _record_state(key: str, *, available: bool, reason: str = "", model_id: str = "") -> None:
    state = (available, reason, model_id[:300])
    last = _recorded_states.get(key)
    if last and last[0] == state and time.monotonic() - last[1] < STATE_REFRESH_S:
        return
    SpaceState.objects.update_or_create(
        key=key, defaults={"available": available, "reason": reason, "checked_at": timezone.now(),
                           "model_id": model_id[:300]},
    )  # fmt: skip
    _recorded_states[key] = (state, time.monotonic())
    if last is None or last[0][0] != available:
        _forget_active()  # which image space is primary may follow


def _forget_active() -> None:
    """This process's cached active versions are out of date: now, and again once the change commits (a search
    in between would cache what the transaction has not committed yet)."""
    active_forget()
    transaction.on_commit(active_forget)


def space_states_forget() -> None:
    """Make the next :func:`space_load` write its state again (tests that empty the tables)."""
    _recorded_states.clear()


def space_load(key: str) -> Embedder:
    """Load a space in this process, record whether it is available, and register its version.

    Raises :class:`SpaceUnavailable` (recorded with its reason) when it cannot be used.
    """
    embedder = embedders.get(key)
    try:
        embedders.load(key)
    except SpaceUnavailable as exc:
        _record_state(key, available=False, reason=exc.reason, model_id=embedder.model_id)
        raise
    # The runtime goes with the model: the admin shows "… · onnx", or why ONNX Runtime is not used.
    _record_state(key, available=True, model_id=f"{embedder.model_id} · {embedder.runtime_label}")
    version_register(space=key, version=embedder.version, dimension=embedder.dimension)
    return embedder


def spaces_prepare(*, keys: Sequence[str] | None = None, log: Callable[[str], None] = logger.info) -> dict[str, str]:
    """Load every enabled space (or ``keys``) in this process and record which are available; one line each.

    On a first run this is where models are exported to ONNX and tokenizers saved, so that the processes started
    afterwards (web workers, the Celery pool) load cached files without PyTorch. Returns per space
    ``"available"`` or ``"unavailable: <reason>"``.
    """
    result: dict[str, str] = {}
    for key in keys or embedders.enabled():
        started = time.monotonic()
        log(f"{key}: loading {embedders.get(key).model_id} …")
        try:
            embedder = space_load(key)
        except SpaceUnavailable as exc:
            result[key] = f"unavailable: {exc.reason}"
            log(f"{key}: unavailable: {exc.reason}")
            continue
        result[key] = "available"
        log(f"{key}: ready in {time.monotonic() - started:.1f} s (runs on {embedder.runtime_label})")
    return result


def version_register(*, space: str, version: str, dimension: int) -> SpaceVersion:
    """Make sure a (space, version) exists with its index. The first version of a space is active at once;
    later ones are built beside it and activated by :func:`version_activate_if_complete`."""
    existing = SpaceVersion.objects.filter(space=space, version=version).first()
    # index_name records which store prepared it: after a switch of store, the new one prepares its own.
    if existing and existing.index_name == get_store().storage_name(space=space, version=version):
        return existing
    with transaction.atomic():
        has_active = SpaceVersion.objects.select_for_update().filter(space=space, state="active").exists()
        row, _ = SpaceVersion.objects.get_or_create(
            space=space, version=version,
            defaults={"dimension": dimension,
                      "state": SpaceVersion.State.BUILDING if has_active else SpaceVersion.State.ACTIVE,
                      "activated_at": None if has_active else timezone.now()},
        )  # fmt: skip
        _forget_active()  # a first version is active at once: this process reads it next
    is_text = embedders.is_text_only(space)
    get_store().ensure_version(space=space, version=version, dimension=dimension, products=is_text)
    row.refresh_from_db()
    return row


def active_version(space: str) -> SpaceVersion | None:
    return SpaceVersion.objects.filter(space=space, state=SpaceVersion.State.ACTIVE).first()


def version_activate_if_complete(*, space: str) -> SpaceVersion | None:
    """Switch search to the newest building version once every image has a vector (or a failure) in it.

    Search reads one version at a time, so it never mixes vectors of two models and
    never goes dark: the old version serves until the new one is complete.
    """
    building = SpaceVersion.objects.filter(space=space, state=SpaceVersion.State.BUILDING).order_by("-created_at")
    candidate = building.first()
    if candidate is None:
        return None
    if embedders.is_text_only(space):
        missing = Product.objects.exclude(Exists(ProductEmbedding.objects.filter(
            product=OuterRef("pk"), space=space, model_version=candidate.version)))  # fmt: skip
        if missing.exists():
            return None
    elif missing_images(space, candidate.version).exists():
        return None
    with transaction.atomic():
        retired = list(SpaceVersion.objects.select_for_update().filter(space=space).exclude(pk=candidate.pk))
        SpaceVersion.objects.filter(pk__in=[r.pk for r in retired]).update(state=SpaceVersion.State.RETIRED)
        SpaceVersion.objects.filter(pk=candidate.pk).update(state=SpaceVersion.State.ACTIVE,
                                                            activated_at=timezone.now())  # fmt: skip
        # This process reads the new version from its next search; others within VITRINE_ACTIVE_CACHE_S, or at
        # once when the drop below leaves their cached version empty (search.querying.active).
        _forget_active()
    for old in retired:
        get_store().drop_version(space=space, version=old.version)
    logger.info("space %s switched to version %s", space, candidate.version)
    candidate.refresh_from_db()
    return candidate


# --- counts ----------------------------------------------------------------------------------


def embeddings_with(space: str, version: str, *statuses: str) -> Any:
    """For ``Exists()``: the outer image's embedding rows in this version with one of these statuses."""
    return ImageEmbedding.objects.filter(image=OuterRef("pk"), space=space, model_version=version,
                                         status__in=statuses)  # fmt: skip


def missing_images(space: str, version: str) -> QuerySet[ProductImage]:
    """Images with neither a vector nor a recorded failure in this version."""
    return ProductImage.objects.exclude(
        Exists(embeddings_with(space, version, EmbeddingStatus.OK, EmbeddingStatus.FAILED))
    )


def current_version(space: str) -> str | None:
    """The version workers compute now: the newest registered one."""
    row = SpaceVersion.objects.filter(space=space).exclude(state=SpaceVersion.State.RETIRED).order_by(
        "-created_at").first()  # fmt: skip
    return row.version if row else None


@dataclass
class ImageSpaceState:
    space: str
    state: str  # "ok", "pending", "stale" (only an older model's vector), "failed", "unavailable"
    detail: str = ""  # why it failed, or why the model is unavailable


def image_embedding_states(*, image: ProductImage) -> list[ImageSpaceState]:
    """One image's vector in every enabled image space, for the admin: computed, on its way, failed (and why), or
    not to be had because the space's model cannot be loaded."""
    unavailable = SpaceState.objects.unavailable_reasons()
    rows = {(row.space, row.model_version): row for row in ImageEmbedding.objects.filter(image=image).only(
        "space", "model_version", "status", "error", "attempts")}  # fmt: skip
    states = []
    for space in embedders.image_spaces():
        version = current_version(space)
        row = rows.get((space, version)) if version else None
        if row is not None and row.status == EmbeddingStatus.OK:
            states.append(ImageSpaceState(space, "ok"))
        elif row is not None:
            states.append(ImageSpaceState(space, "failed", f"{row.error} ({row.attempts} attempt(s))"))
        elif space in unavailable:
            states.append(ImageSpaceState(space, "unavailable", unavailable[space]))
        elif any(key[0] == space and r.status == EmbeddingStatus.OK for key, r in rows.items()):
            states.append(ImageSpaceState(space, "stale", "only an older model's vector; the new one is on its way"))
        else:
            states.append(ImageSpaceState(space, "pending"))
    return states


@dataclass
class SpaceCounts:
    total: int
    present: int
    missing: int
    stale: int
    failed: int


def space_counts(space: str) -> SpaceCounts:
    """Counts for the admin: present/failed in the current version, stale = only an older version.

    Image spaces count images; text spaces count products (stale also covers edited text).
    """
    if embedders.is_text_only(space):
        return _text_space_counts(space)
    total = ProductImage.objects.count()
    version = current_version(space)
    if version is None:
        return SpaceCounts(total=total, present=0, missing=total, stale=0, failed=0)
    ok = ProductImage.objects.filter(Exists(embeddings_with(space, version, EmbeddingStatus.OK)))
    failed = ProductImage.objects.filter(Exists(embeddings_with(space, version, EmbeddingStatus.FAILED)))
    older = ImageEmbedding.objects.filter(image=OuterRef("pk"), space=space, status=EmbeddingStatus.OK).exclude(
        model_version=version)  # fmt: skip
    missing = missing_images(space, version)
    stale = missing.filter(Exists(older)).count()
    return SpaceCounts(total=total, present=ok.count(), failed=failed.count(), stale=stale,
                       missing=missing.count() - stale)  # fmt: skip


def _text_space_counts(space: str) -> SpaceCounts:
    total = Product.objects.count()
    version = current_version(space)
    if version is None:
        return SpaceCounts(total=total, present=0, missing=total, stale=0, failed=0)
    rows = ProductEmbedding.objects.filter(space=space, model_version=version)
    current = {pk: h for pk, h in rows.filter(status=EmbeddingStatus.OK).values_list("product_id", "source_hash")}
    failed = rows.filter(status=EmbeddingStatus.FAILED).count()
    present = stale = 0
    for product in Product.objects.only("id", "title", "description"):
        if product.pk in current:
            if current[product.pk] == product_text_hash(product_text(product)):
                present += 1
            else:
                stale += 1
    older = ProductEmbedding.objects.filter(space=space).exclude(model_version=version).exclude(
        product_id__in=list(current)).values("product_id").distinct().count()  # fmt: skip
    stale += older
    return SpaceCounts(total=total, present=present, missing=max(0, total - present - stale - failed), stale=stale,
                       failed=failed)  # fmt: skip
